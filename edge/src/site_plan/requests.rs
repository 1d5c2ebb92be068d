//! Request planning: which read requests cover a poll group's points.
//!
//! Points (and the scale-factor registers they need) are sorted by address
//! and merged into as few requests as the protocol limit (125 registers,
//! 2000 bits) and the device's `max_gap` allow: two neighbours share a
//! request when the unused registers between them number at most `max_gap`.
//! Each point then knows which request holds it and where, so a failed
//! request marks exactly its own points missing.

use std::fmt;

use crate::register::RegisterTable;

/// The most registers one Modbus read request may ask for.
pub const MAX_REGISTERS_PER_READ: u16 = 125;

/// One read request: `count` registers (or bits) from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    pub table: RegisterTable,
    pub start: u16,
    pub count: u16,
}

impl ReadRequest {
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

impl fmt::Display for ReadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}..{}", self.table, self.start, self.end() - 1)
    }
}

/// Where a span of registers lives in a group's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Index into the group's requests.
    pub request: usize,
    /// Offset of the first register inside that request's answer.
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{width} {unit}s at address {address} do not fit in one read request (at most {limit})"
    )]
    TooWide {
        address: u16,
        width: u16,
        unit: &'static str,
        limit: u16,
    },
    #[error("{width} {unit}s at address {address} run past the end of the address space")]
    PastEnd {
        address: u16,
        width: u16,
        unit: &'static str,
    },
}

/// The requests covering `spans` (address, width), in address order.
pub fn coalesce(
    table: RegisterTable,
    spans: &[(u16, u16)],
    max_gap: u16,
) -> Result<Vec<ReadRequest>, PlanError> {
    let limit = u32::from(table.max_per_read());
    let mut sorted: Vec<(u16, u16)> = spans.to_vec();
    sorted.sort_unstable();
    let mut requests: Vec<ReadRequest> = Vec::new();
    let mut current: Option<(u32, u32)> = None;
    for (address, width) in sorted {
        let (start, end) = (
            u32::from(address),
            u32::from(address) + u32::from(width.max(1)),
        );
        if end > 0x1_0000 {
            return Err(PlanError::PastEnd {
                address,
                width,
                unit: table.unit_name(),
            });
        }
        if end - start > limit {
            return Err(PlanError::TooWide {
                address,
                width,
                unit: table.unit_name(),
                limit: limit as u16,
            });
        }
        current = match current {
            Some((s, e)) if start <= e + u32::from(max_gap) && end.max(e) - s <= limit => {
                Some((s, end.max(e)))
            }
            Some((s, e)) => {
                requests.push(ReadRequest {
                    table,
                    start: s as u16,
                    count: (e - s) as u16,
                });
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        requests.push(ReadRequest {
            table,
            start: s as u16,
            count: (e - s) as u16,
        });
    }
    Ok(requests)
}

/// The fewest requests that could cover `spans` if any gap could be read:
/// the benchmark's and `check`'s yardstick. Greedy from the lowest address
/// is optimal for covering fixed-size windows.
pub fn minimum_requests(table: RegisterTable, spans: &[(u16, u16)]) -> usize {
    coalesce(table, spans, u16::MAX).map_or(0, |r| r.len())
}

/// The request and offset holding `address .. address + width`.
pub fn locate(requests: &[ReadRequest], address: u16, width: u16) -> Option<Slot> {
    let (start, end) = (
        u32::from(address),
        u32::from(address) + u32::from(width.max(1)),
    );
    requests
        .iter()
        .position(|r| u32::from(r.start) <= start && end <= r.end())
        .map(|request| Slot {
            request,
            offset: usize::from(address - requests[request].start),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: RegisterTable = RegisterTable::Holding;

    #[test]
    fn neighbours_within_the_gap_share_one_request() {
        let requests = coalesce(H, &[(10, 2), (0, 1), (4, 1)], 5).unwrap();
        assert_eq!(
            requests,
            vec![ReadRequest {
                table: H,
                start: 0,
                count: 12
            }]
        );
        let requests = coalesce(H, &[(10, 2), (0, 1), (4, 1)], 3).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[1],
            ReadRequest {
                table: H,
                start: 10,
                count: 2
            }
        );
    }

    #[test]
    fn a_group_wider_than_125_registers_becomes_several_requests() {
        let spans: Vec<(u16, u16)> = (0..200).map(|a| (a, 1)).collect();
        let requests = coalesce(H, &spans, 0).unwrap();
        assert_eq!(
            requests.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![125, 75]
        );
        assert_eq!(minimum_requests(H, &spans), 2);
    }

    #[test]
    fn a_value_never_straddles_two_requests() {
        let mut spans: Vec<(u16, u16)> = (0..124).map(|a| (a, 1)).collect();
        spans.push((124, 2));
        let requests = coalesce(H, &spans, 0).unwrap();
        assert_eq!(requests[0].count, 124);
        assert_eq!(
            locate(&requests, 124, 2),
            Some(Slot {
                request: 1,
                offset: 0
            })
        );
    }

    #[test]
    fn overlapping_spans_are_read_once() {
        let requests = coalesce(H, &[(0, 4), (2, 1), (3, 2)], 0).unwrap();
        assert_eq!(
            requests,
            vec![ReadRequest {
                table: H,
                start: 0,
                count: 5
            }]
        );
        assert_eq!(
            locate(&requests, 3, 2),
            Some(Slot {
                request: 0,
                offset: 3
            })
        );
    }

    #[test]
    fn the_minimum_ignores_the_gap_limit() {
        let spans = [(0, 1), (50, 1), (100, 1)];
        assert_eq!(coalesce(H, &spans, 10).unwrap().len(), 3);
        assert_eq!(minimum_requests(H, &spans), 1);
    }

    #[test]
    fn bit_tables_allow_2000_bits_per_request() {
        let requests = coalesce(
            RegisterTable::Coils,
            &[(0, 1), (1999, 1), (2000, 1)],
            u16::MAX,
        )
        .unwrap();
        assert_eq!(requests.len(), 2);
    }

    #[test]
    fn impossible_spans_are_refused() {
        assert!(matches!(
            coalesce(H, &[(0, 126)], 0),
            Err(PlanError::TooWide { .. })
        ));
        assert!(matches!(
            coalesce(H, &[(65535, 2)], 0),
            Err(PlanError::PastEnd { .. })
        ));
    }
}
