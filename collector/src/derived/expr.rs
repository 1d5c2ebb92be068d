//! The expressions of derived points: parsing and evaluation.
//!
//! ```text
//! expr    := term (("+" | "-") term)*
//! term    := unary (("*" | "/") unary)*
//! unary   := "-" unary | primary
//! primary := NUMBER | REF | FUNC "(" REF ")" | "abs" "(" expr ")" | "(" expr ")"
//! REF     := [DEVICE "/"] POINT          (globs with * and ? inside FUNC)
//! FUNC    := sum | avg | min | max | count
//! ```
//!
//! Names run from a letter, digit, `_` or `*` to the next space, bracket,
//! comma or operator character other than `-`, `*` and `?` inside the name
//! (device names like `rack-1` and patterns like `*/active_power` are one
//! name): put spaces around `-` and `*` when they are operators
//! (`rack-1/cell_voltage_max - rack-1/cell_voltage_min`). A reference
//! without a device names a point of the device a `for_each` definition is
//! expanded for.

use std::fmt;

/// A parsed expression; references are still names.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    /// One point: `(device, point)`; `device` is `None` for "this device".
    Point(Option<String>, String),
    /// An aggregate over the points a pattern matches.
    Aggregate(Aggregate, Option<String>, String),
    Abs(Box<Expr>),
    Negate(Box<Expr>),
    Binary(Box<Expr>, Op, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// Why an expression did not parse: where (0-based character offset) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    pub at: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.at + 1, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Op(char),
    Open,
    Close,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*' | '?' | '/')
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            out.push((i, Token::Open));
            i += 1;
        } else if c == ')' {
            out.push((i, Token::Close));
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || chars[i] == '.'
                    || ((chars[i] == 'e' || chars[i] == 'E') && i > start)
                    || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            // A name that starts with digits (a device `1a`) is a name.
            if i < chars.len() && is_name_char(chars[i]) && chars[i] != '-' && chars[i] != '*' {
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
                out.push((start, Token::Name(chars[start..i].iter().collect())));
                continue;
            }
            let literal: String = chars[start..i].iter().collect();
            let value = literal.parse::<f64>().map_err(|_| ExprError {
                at: start,
                message: format!("{literal:?} is not a number"),
            })?;
            out.push((start, Token::Number(value)));
        } else if c.is_ascii_alphabetic()
            || c == '_'
            || (c == '*' && next.is_some_and(|n| is_name_char(n) && n != '-'))
            || c == '?'
        {
            let start = i;
            while i < chars.len() && is_name_char(chars[i]) {
                i += 1;
            }
            out.push((start, Token::Name(chars[start..i].iter().collect())));
        } else if matches!(c, '+' | '-' | '*' | '/') {
            out.push((i, Token::Op(c)));
            i += 1;
        } else {
            return Err(ExprError {
                at: i,
                message: format!("unexpected {c:?}"),
            });
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(at, _)| *at)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError {
            at: self.at(),
            message: message.into(),
        })
    }

    fn expr(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.term()?;
        while let Some(Token::Op(c @ ('+' | '-'))) = self.peek().cloned() {
            self.next += 1;
            let op = if c == '+' { Op::Add } else { Op::Sub };
            left = Expr::Binary(Box::new(left), op, Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        while let Some(Token::Op(c @ ('*' | '/'))) = self.peek().cloned() {
            self.next += 1;
            let op = if c == '*' { Op::Mul } else { Op::Div };
            left = Expr::Binary(Box::new(left), op, Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if let Some(Token::Op('-')) = self.peek() {
            self.next += 1;
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        match self.peek().cloned() {
            Some(Token::Number(v)) => {
                self.next += 1;
                Ok(Expr::Number(v))
            }
            Some(Token::Open) => {
                self.next += 1;
                let inner = self.expr()?;
                self.close()?;
                Ok(inner)
            }
            Some(Token::Name(name)) => {
                self.next += 1;
                if self.peek() != Some(&Token::Open) {
                    return point(&name).map_err(|message| ExprError {
                        at: self.tokens[self.next - 1].0,
                        message,
                    });
                }
                self.next += 1;
                let function = match name.as_str() {
                    "abs" => {
                        let inner = self.expr()?;
                        self.close()?;
                        return Ok(Expr::Abs(Box::new(inner)));
                    }
                    "sum" => Aggregate::Sum,
                    "avg" => Aggregate::Avg,
                    "min" => Aggregate::Min,
                    "max" => Aggregate::Max,
                    "count" => Aggregate::Count,
                    other => {
                        return Err(ExprError {
                            at: self.tokens[self.next - 2].0,
                            message: format!(
                                "unknown function {other:?} (sum, avg, min, max, count, abs)"
                            ),
                        })
                    }
                };
                let Some(Token::Name(pattern)) = self.peek().cloned() else {
                    return self.error("expected a point pattern such as */active_power");
                };
                self.next += 1;
                self.close()?;
                let (device, point) = split(&pattern);
                Ok(Expr::Aggregate(function, device, point))
            }
            Some(Token::Op(c)) => self.error(format!("expected a value, found {c:?}")),
            Some(Token::Close) => self.error("expected a value, found \")\""),
            None => self.error("the expression ends too early"),
        }
    }

    fn close(&mut self) -> Result<(), ExprError> {
        if self.peek() == Some(&Token::Close) {
            self.next += 1;
            Ok(())
        } else {
            self.error("expected \")\"")
        }
    }
}

fn split(name: &str) -> (Option<String>, String) {
    match name.split_once('/') {
        Some((device, point)) => (Some(device.to_owned()), point.to_owned()),
        None => (None, name.to_owned()),
    }
}

fn point(name: &str) -> Result<Expr, String> {
    if name.contains(['*', '?']) {
        return Err(format!(
            "{name:?} is a pattern: use it inside sum(), avg(), min(), max() or count()"
        ));
    }
    let (device, point) = split(name);
    if point.is_empty() || point.contains('/') || device.as_deref() == Some("") {
        return Err(format!("{name:?} is not DEVICE/POINT or POINT"));
    }
    Ok(Expr::Point(device, point))
}

/// Parse an expression.
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        next: 0,
        end: text.chars().count(),
    };
    let expr = parser.expr()?;
    if parser.next < parser.tokens.len() {
        return parser.error("unexpected text after the expression");
    }
    Ok(expr)
}

impl Expr {
    /// Every reference, in order: `(aggregate, device, point)`.
    pub fn references(&self) -> Vec<(Option<Aggregate>, Option<&str>, &str)> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<(Option<Aggregate>, Option<&'a str>, &'a str)>) {
        match self {
            Expr::Number(_) => {}
            Expr::Point(device, point) => out.push((None, device.as_deref(), point)),
            Expr::Aggregate(f, device, point) => out.push((Some(*f), device.as_deref(), point)),
            Expr::Abs(inner) | Expr::Negate(inner) => inner.collect(out),
            Expr::Binary(a, _, b) => {
                a.collect(out);
                b.collect(out);
            }
        }
    }

    /// Evaluate, with `inputs[i]` the values of the i-th reference (one
    /// value for a point, every matched value for an aggregate). `None`
    /// when a value is missing, an aggregate matched nothing, or the result
    /// is not finite (a division by zero).
    pub fn evaluate(&self, inputs: &[Vec<f64>]) -> Option<f64> {
        let mut next = 0;
        let value = self.eval(inputs, &mut next)?;
        value.is_finite().then_some(value)
    }

    fn eval(&self, inputs: &[Vec<f64>], next: &mut usize) -> Option<f64> {
        Some(match self {
            Expr::Number(v) => *v,
            Expr::Point(..) => {
                let values = inputs.get(*next)?;
                *next += 1;
                *values.first()?
            }
            Expr::Aggregate(f, ..) => {
                let values = inputs.get(*next)?;
                *next += 1;
                match f {
                    Aggregate::Count => values.len() as f64,
                    _ if values.is_empty() => return None,
                    Aggregate::Sum => values.iter().sum(),
                    Aggregate::Avg => values.iter().sum::<f64>() / values.len() as f64,
                    Aggregate::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
                    Aggregate::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                }
            }
            Expr::Abs(inner) => inner.eval(inputs, next)?.abs(),
            Expr::Negate(inner) => -inner.eval(inputs, next)?,
            Expr::Binary(a, op, b) => {
                // Both sides consume their inputs, whatever the result.
                let a = a.eval(inputs, next);
                let b = b.eval(inputs, next);
                let (a, b) = (a?, b?);
                match op {
                    Op::Add => a + b,
                    Op::Sub => a - b,
                    Op::Mul => a * b,
                    Op::Div => a / b,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, inputs: &[&[f64]]) -> Option<f64> {
        let inputs: Vec<Vec<f64>> = inputs.iter().map(|v| v.to_vec()).collect();
        parse(text).unwrap().evaluate(&inputs)
    }

    #[test]
    fn arithmetic_keeps_precedence_and_names_keep_their_dashes() {
        let e = parse("rack-1/cell_voltage_max - rack-1/cell_voltage_min").unwrap();
        assert_eq!(
            e.references(),
            vec![
                (None, Some("rack-1"), "cell_voltage_max"),
                (None, Some("rack-1"), "cell_voltage_min")
            ]
        );
        assert_eq!(eval("a - b * 2", &[&[10.0], &[3.0]]), Some(4.0));
        assert_eq!(eval("(a - b) * 2", &[&[10.0], &[3.0]]), Some(14.0));
        assert_eq!(eval("-a / 4 + 1", &[&[8.0]]), Some(-1.0));
        assert_eq!(eval("abs(a - b)", &[&[1.0], &[3.5]]), Some(2.5));
        assert_eq!(eval("1.5e3 * a", &[&[2.0]]), Some(3000.0));
    }

    #[test]
    fn aggregates_take_patterns_and_reduce_every_match() {
        let e = parse("sum(*/active_power) / 1000").unwrap();
        assert_eq!(
            e.references(),
            vec![(Some(Aggregate::Sum), Some("*"), "active_power")]
        );
        assert_eq!(
            eval("sum(*/p) / 1000", &[&[1000.0, 2000.0, 500.0]]),
            Some(3.5)
        );
        assert_eq!(
            eval("max(cell_v*) - min(cell_v*)", &[&[3.3, 3.4], &[3.3, 3.4]])
                .map(|v| (v * 10.0).round()),
            Some(1.0)
        );
        assert_eq!(eval("avg(*/t)", &[&[1.0, 2.0, 3.0]]), Some(2.0));
        assert_eq!(eval("count(*/t)", &[&[]]), Some(0.0));
        assert_eq!(eval("sum(*/t)", &[&[]]), None, "nothing matched");
    }

    #[test]
    fn a_division_by_zero_gives_no_value() {
        assert_eq!(eval("a / b", &[&[1.0], &[0.0]]), None);
    }

    #[test]
    fn errors_say_where_and_what() {
        let cases = [
            ("a +", "ends too early"),
            ("a b", "unexpected text"),
            ("sum(", "point pattern"),
            ("median(*/x)", "unknown function"),
            ("*/active_power", "is a pattern"),
            ("(a - b", "expected \")\""),
            ("a % b", "unexpected '%'"),
        ];
        for (text, words) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.message.contains(words), "{text}: {error}");
        }
        assert_eq!(parse("a b").unwrap_err().at, 2);
    }
}
