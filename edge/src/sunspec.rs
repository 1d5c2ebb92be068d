//! SunSpec discovery: find the "SunS" marker, walk the model chain and turn
//! the models we know into poll groups with named points, units and
//! scale-factor registers — no hand-written register map needed.
//!
//! Known models: 1 (common: manufacturer, model, serial become the device's
//! model text; strings are not polled), 101/102/103 (inverter, integer +
//! scale factors), 111/112/113 (inverter, float), 124 (storage) and 802
//! (battery base). Other models are listed by `scan` and skipped. Every
//! point treats its type's "not implemented" value (0xFFFF, 0x8000, NaN,
//! ...) as a missing value, as SunSpec prescribes.

use std::time::Duration;

use bess_protocol::PointKind;

use crate::link::{ModbusLink, RequestOutcome};
use crate::register::{DataType, Decoded, PointCodec, RegisterTable};
use crate::site_plan::{plan_points, GroupPlan, LinkPlan, PointSpec, ReadRequest};

/// "SunS" as two registers.
pub const MARKER: [u16; 2] = [0x5375, 0x6E53];
/// Where devices put the marker, in the order we try them.
pub const BASES: [u16; 3] = [40000, 0, 50000];
const END_OF_CHAIN: u16 = 0xFFFF;
const MAX_MODELS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SunspecError {
    #[error("no SunSpec marker \"SunS\" at {tried:?}")]
    NotFound { tried: Vec<u16> },
    #[error("reading the model chain at register {address}: {reason}")]
    Read { address: u16, reason: String },
    #[error("model chain at register {address} runs past the end of the address space")]
    Overrun { address: u16 },
}

/// One model instance found in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInstance {
    pub id: u16,
    /// Address of the model's ID register.
    pub address: u16,
    /// Registers after the ID and L registers.
    pub length: u16,
}

impl ModelInstance {
    pub fn name(&self) -> &'static str {
        model_name(self.id)
    }
}

/// What discovery found on one device.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub base: u16,
    pub models: Vec<ModelInstance>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub version: Option<String>,
}

impl Discovery {
    /// "Manufacturer Model (SN serial)", for the catalog.
    pub fn describe(&self) -> String {
        let mut text = [self.manufacturer.as_deref(), self.model.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if text.is_empty() {
            text = "SunSpec device".into();
        }
        if let Some(sn) = self.serial.as_deref().filter(|s| !s.is_empty()) {
            text.push_str(&format!(" (SN {sn})"));
        }
        text
    }

    /// Poll groups for every known model, in chain order. Group names are
    /// the model's name, with `-2`, `-3` for repeated models.
    pub fn groups(&self, interval: Duration) -> Vec<GroupPlan> {
        let mut groups = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for model in &self.models {
            let Some(points) = model_points(model.id) else {
                continue;
            };
            let base = model.address + 2;
            let specs: Vec<PointSpec> = points
                .iter()
                .filter(|p| p.offset + p.ty.width() <= model.length)
                .map(|p| {
                    let mut codec = PointCodec::new(p.ty.data_type()).with_default_marker();
                    codec.length = p.ty.width();
                    PointSpec {
                        name: p.name.to_owned(),
                        unit: p.unit.to_owned(),
                        kind: p.ty.kind(),
                        scale: 1.0,
                        offset: 0.0,
                        address: base + p.offset,
                        codec,
                        scale_register: p.sf.filter(|&sf| sf < model.length).map(|sf| base + sf),
                        flags: Vec::new(),
                    }
                })
                .collect();
            if specs.is_empty() {
                continue;
            }
            let name = model.name();
            let n = seen.iter().filter(|s| **s == name).count();
            seen.push(name);
            let group_name = if n == 0 {
                name.to_owned()
            } else {
                format!("{name}-{}", n + 1)
            };
            // Every register inside a model exists, so gaps may be read.
            match plan_points(
                0,
                &group_name,
                interval,
                RegisterTable::Holding,
                specs,
                u16::MAX,
            ) {
                Ok(plan) => groups.push(plan),
                Err(e) => tracing::warn!(model = model.id, "skipping SunSpec model: {e}"),
            }
        }
        groups
    }
}

async fn read(
    link: &ModbusLink,
    plan: &LinkPlan,
    start: u16,
    count: u16,
) -> Result<Vec<u16>, SunspecError> {
    let request = ReadRequest {
        table: RegisterTable::Holding,
        start,
        count,
    };
    match link
        .read(plan.unit, request, plan.timeout, plan.retries)
        .await
    {
        RequestOutcome::Words(words) => Ok(words),
        RequestOutcome::Missing(reason) => Err(SunspecError::Read {
            address: start,
            reason: reason.describe(),
        }),
    }
}

/// Find the marker (at `base`, or at each of [`BASES`]) and walk the chain.
pub async fn discover(
    link: &ModbusLink,
    plan: &LinkPlan,
    base: Option<u16>,
) -> Result<Discovery, SunspecError> {
    let tried: Vec<u16> = base.map_or_else(|| BASES.to_vec(), |b| vec![b]);
    let mut found = None;
    for &b in &tried {
        if let Ok(words) = read(link, plan, b, 2).await {
            if words[..2] == MARKER {
                found = Some(b);
                break;
            }
        }
    }
    let Some(base) = found else {
        return Err(SunspecError::NotFound { tried });
    };
    let mut discovery = Discovery {
        base,
        models: Vec::new(),
        manufacturer: None,
        model: None,
        serial: None,
        version: None,
    };
    let mut address = u32::from(base) + 2;
    while discovery.models.len() < MAX_MODELS {
        if address + 2 > 0x1_0000 {
            return Err(SunspecError::Overrun {
                address: address as u16,
            });
        }
        let header = read(link, plan, address as u16, 2).await?;
        let (id, length) = (header[0], header[1]);
        if id == END_OF_CHAIN {
            break;
        }
        discovery.models.push(ModelInstance {
            id,
            address: address as u16,
            length,
        });
        if id == 1 && length >= 64 {
            let common = read(link, plan, address as u16 + 2, 64).await?;
            let text = |offset: usize, len: u16| {
                let mut codec = PointCodec::new(DataType::String);
                codec.length = len;
                match codec.decode(&common[offset..offset + usize::from(len)]) {
                    Decoded::Text(t) if !t.is_empty() => Some(t),
                    _ => None,
                }
            };
            discovery.manufacturer = text(0, 16);
            discovery.model = text(16, 16);
            discovery.version = text(40, 8);
            discovery.serial = text(48, 16);
        }
        address += 2 + u32::from(length);
    }
    Ok(discovery)
}

/// SunSpec point types we map.
#[derive(Debug, Clone, Copy)]
enum Ty {
    U16,
    I16,
    Acc32,
    U32,
    Enum16,
    Bits16,
    Bits32,
    F32,
}

impl Ty {
    fn width(self) -> u16 {
        match self {
            Ty::U16 | Ty::I16 | Ty::Enum16 | Ty::Bits16 => 1,
            Ty::Acc32 | Ty::U32 | Ty::Bits32 | Ty::F32 => 2,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Ty::U16 | Ty::Enum16 | Ty::Bits16 => DataType::U16,
            Ty::I16 => DataType::I16,
            Ty::Acc32 | Ty::U32 | Ty::Bits32 => DataType::U32,
            Ty::F32 => DataType::F32,
        }
    }

    fn kind(self) -> PointKind {
        match self {
            Ty::Acc32 => PointKind::Counter,
            Ty::Bits16 | Ty::Bits32 => PointKind::Bitfield,
            _ => PointKind::Analog,
        }
    }
}

/// One point of a model: name, offset after the L register, type, unit,
/// and the offset of its scale factor.
struct Pt {
    name: &'static str,
    offset: u16,
    ty: Ty,
    unit: &'static str,
    sf: Option<u16>,
}

const fn pt(name: &'static str, offset: u16, ty: Ty, unit: &'static str, sf: Option<u16>) -> Pt {
    Pt {
        name,
        offset,
        ty,
        unit,
        sf,
    }
}

pub fn model_name(id: u16) -> &'static str {
    match id {
        1 => "common",
        101 => "inverter-1ph",
        102 => "inverter-split",
        103 => "inverter-3ph",
        111 => "inverter-1ph-float",
        112 => "inverter-split-float",
        113 => "inverter-3ph-float",
        120 => "nameplate",
        121 => "settings",
        122 => "status",
        123 => "controls",
        124 => "storage",
        160 => "mppt",
        201..=204 => "meter",
        802 => "battery",
        803 => "lithium-ion-bank",
        804 => "lithium-ion-string",
        _ => "unknown",
    }
}

fn model_points(id: u16) -> Option<&'static [Pt]> {
    match id {
        101..=103 => Some(INVERTER),
        111..=113 => Some(INVERTER_FLOAT),
        124 => Some(STORAGE),
        802 => Some(BATTERY),
        _ => None,
    }
}

use Ty::*;

/// Models 101, 102, 103 (L = 50).
static INVERTER: &[Pt] = &[
    pt("a", 0, U16, "A", Some(4)),
    pt("a_ph_a", 1, U16, "A", Some(4)),
    pt("a_ph_b", 2, U16, "A", Some(4)),
    pt("a_ph_c", 3, U16, "A", Some(4)),
    pt("v_ab", 5, U16, "V", Some(11)),
    pt("v_bc", 6, U16, "V", Some(11)),
    pt("v_ca", 7, U16, "V", Some(11)),
    pt("v_an", 8, U16, "V", Some(11)),
    pt("v_bn", 9, U16, "V", Some(11)),
    pt("v_cn", 10, U16, "V", Some(11)),
    pt("w", 12, I16, "W", Some(13)),
    pt("hz", 14, U16, "Hz", Some(15)),
    pt("va", 16, I16, "VA", Some(17)),
    pt("var", 18, I16, "var", Some(19)),
    pt("pf", 20, I16, "%", Some(21)),
    pt("wh", 22, Acc32, "Wh", Some(24)),
    pt("dc_a", 25, U16, "A", Some(26)),
    pt("dc_v", 27, U16, "V", Some(28)),
    pt("dc_w", 29, I16, "W", Some(30)),
    pt("temp_cabinet", 31, I16, "°C", Some(35)),
    pt("temp_sink", 32, I16, "°C", Some(35)),
    pt("temp_transformer", 33, I16, "°C", Some(35)),
    pt("temp_other", 34, I16, "°C", Some(35)),
    pt("state", 36, Enum16, "", None),
    pt("state_vendor", 37, Enum16, "", None),
    pt("events_1", 38, Bits32, "", None),
    pt("events_2", 40, Bits32, "", None),
];

/// Models 111, 112, 113 (L = 60).
static INVERTER_FLOAT: &[Pt] = &[
    pt("a", 0, F32, "A", None),
    pt("a_ph_a", 2, F32, "A", None),
    pt("a_ph_b", 4, F32, "A", None),
    pt("a_ph_c", 6, F32, "A", None),
    pt("v_ab", 8, F32, "V", None),
    pt("v_bc", 10, F32, "V", None),
    pt("v_ca", 12, F32, "V", None),
    pt("v_an", 14, F32, "V", None),
    pt("v_bn", 16, F32, "V", None),
    pt("v_cn", 18, F32, "V", None),
    pt("w", 20, F32, "W", None),
    pt("hz", 22, F32, "Hz", None),
    pt("va", 24, F32, "VA", None),
    pt("var", 26, F32, "var", None),
    pt("pf", 28, F32, "%", None),
    pt("wh", 30, F32, "Wh", None),
    pt("dc_a", 32, F32, "A", None),
    pt("dc_v", 34, F32, "V", None),
    pt("dc_w", 36, F32, "W", None),
    pt("temp_cabinet", 38, F32, "°C", None),
    pt("temp_sink", 40, F32, "°C", None),
    pt("temp_transformer", 42, F32, "°C", None),
    pt("temp_other", 44, F32, "°C", None),
    pt("state", 46, Enum16, "", None),
    pt("state_vendor", 47, Enum16, "", None),
    pt("events_1", 48, Bits32, "", None),
    pt("events_2", 50, Bits32, "", None),
];

/// Model 124, storage (L = 24).
static STORAGE: &[Pt] = &[
    pt("w_charge_max", 0, U16, "W", Some(16)),
    pt("w_charge_ramp", 1, U16, "%", Some(17)),
    pt("w_discharge_ramp", 2, U16, "%", Some(17)),
    pt("storage_control_mode", 3, Bits16, "", None),
    pt("va_charge_max", 4, U16, "VA", Some(18)),
    pt("min_reserve", 5, U16, "%", Some(19)),
    pt("charge_state", 6, U16, "%", Some(20)),
    pt("storage_available", 7, U16, "Ah", Some(21)),
    pt("battery_v", 8, U16, "V", Some(22)),
    pt("charge_status", 9, Enum16, "", None),
    pt("discharge_rate", 10, I16, "%", Some(23)),
    pt("charge_rate", 11, I16, "%", Some(23)),
    pt("grid_charging", 15, Enum16, "", None),
];

/// Model 802, battery base (L = 62).
static BATTERY: &[Pt] = &[
    pt("ah_rating", 0, U16, "Ah", Some(50)),
    pt("wh_rating", 1, U16, "Wh", Some(51)),
    pt("w_charge_max", 2, U16, "W", Some(52)),
    pt("w_discharge_max", 3, U16, "W", Some(52)),
    pt("discharge_rate", 4, U16, "%", Some(53)),
    pt("soc_max", 5, U16, "%", Some(54)),
    pt("soc_min", 6, U16, "%", Some(54)),
    pt("soc", 9, U16, "%", Some(54)),
    pt("dod", 10, U16, "%", Some(55)),
    pt("soh", 11, U16, "%", Some(56)),
    pt("cycles", 12, U32, "", None),
    pt("charge_status", 14, Enum16, "", None),
    pt("control_mode", 15, Enum16, "", None),
    pt("heartbeat", 16, U16, "", None),
    pt("type", 19, Enum16, "", None),
    pt("state", 20, Enum16, "", None),
    pt("events_1", 24, Bits32, "", None),
    pt("events_2", 26, Bits32, "", None),
    pt("v", 32, U16, "V", Some(57)),
    pt("v_max", 33, U16, "V", Some(57)),
    pt("v_min", 34, U16, "V", Some(57)),
    pt("cell_v_max", 35, U16, "V", Some(58)),
    pt("cell_v_min", 38, U16, "V", Some(58)),
    pt("cell_v_avg", 41, U16, "V", Some(58)),
    pt("a", 42, I16, "A", Some(59)),
    pt("a_charge_max", 43, U16, "A", Some(60)),
    pt("a_discharge_max", 44, U16, "A", Some(60)),
    pt("w", 45, I16, "W", Some(61)),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_tables_stay_inside_their_models() {
        for (id, len) in [(103, 50), (113, 60), (124, 24), (802, 62)] {
            for p in model_points(id).unwrap() {
                assert!(p.offset + p.ty.width() <= len, "{id}/{}", p.name);
                assert!(p.sf.is_none_or(|sf| sf < len), "{id}/{}", p.name);
            }
        }
    }

    #[test]
    fn known_models_become_groups_with_scale_factor_registers() {
        let discovery = Discovery {
            base: 40000,
            models: vec![
                ModelInstance {
                    id: 1,
                    address: 40002,
                    length: 66,
                },
                ModelInstance {
                    id: 103,
                    address: 40070,
                    length: 50,
                },
                ModelInstance {
                    id: 999,
                    address: 40122,
                    length: 10,
                },
                ModelInstance {
                    id: 802,
                    address: 40134,
                    length: 62,
                },
            ],
            manufacturer: Some("Acme".into()),
            model: Some("Stack 100".into()),
            serial: Some("42".into()),
            version: None,
        };
        assert_eq!(discovery.describe(), "Acme Stack 100 (SN 42)");
        let groups = discovery.groups(Duration::from_secs(1));
        assert_eq!(
            groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            vec!["inverter-3ph", "battery"]
        );
        let w = groups[0].points.iter().find(|p| p.name == "w").unwrap();
        assert_eq!(w.address, 40072 + 12);
        assert_eq!(w.scale_factor.map(|(a, _)| a), Some(40072 + 13));
        assert_eq!(groups[0].requests.len(), 1, "one model, one request");
        let soc = groups[1].points.iter().find(|p| p.name == "soc").unwrap();
        assert_eq!(soc.scale_factor.map(|(a, _)| a), Some(40136 + 54));
    }
}
