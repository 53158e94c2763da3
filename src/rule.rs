//! etcd-defrag's rule language (pure; below the configuration, which checks rules when it reads them): an expression over one member's database figures that says whether the
//! member is worth defragmenting, e.g. `dbQuotaUsage > 0.8 || dbSizeFree > 200*1024*1024`.
//!
//! Evaluation is evalexpr's; what it accepts is narrowed here to arithmetic, comparisons and `&&`/`||`/`!` over
//! the five variables (no assignment, no strings, no functions), and every rule is checked when it is read, so a
//! typo is a usage error at start-up, with its column, and never a surprise at 3 a.m. Every variable is a float:
//! `dbQuotaUsage` is a ratio and sizes are compared with integer literals (`200*1024*1024`) in the same rule.

use evalexpr::{
    Context, ContextWithMutableVariables, DefaultNumericTypes, HashMapContext, Node, Value,
};
use serde::Serialize;

/// The variables a rule may name, as etcd-defrag spells them.
pub const VARIABLES: [&str; 5] = [
    "dbSize",
    "dbSizeInUse",
    "dbSizeFree",
    "dbQuota",
    "dbQuotaUsage",
];

/// The longest rule accepted, and the deepest nesting of parentheses.
pub const MAX_RULE_CHARS: usize = 512;
const MAX_DEPTH: usize = 16;

/// A rule that was read and checked. The empty rule holds for every member.
#[derive(Debug, Clone)]
pub struct Rule {
    text: String,
    tree: Option<Node<DefaultNumericTypes>>,
}

/// Why a rule was refused: where (a 1-based column of the rule's text) and what.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{rule:?}: at column {column}: {message}")]
pub struct RuleError {
    pub rule: String,
    pub column: usize,
    pub message: String,
}

/// One member's figures, as the rule sees them (the `values` of a skipped member in the report).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleInputs {
    pub db_size: f64,
    pub db_size_in_use: f64,
    pub db_size_free: f64,
    pub db_quota: f64,
    pub db_quota_usage: f64,
}

impl RuleInputs {
    pub fn new(db_size: u64, db_size_in_use: u64, db_quota: u64) -> Self {
        let (size, in_use, quota) = (db_size as f64, db_size_in_use as f64, db_quota as f64);
        RuleInputs {
            db_size: size,
            db_size_in_use: in_use,
            db_size_free: (size - in_use).max(0.0),
            db_quota: quota,
            db_quota_usage: if quota > 0.0 { size / quota } else { 0.0 },
        }
    }

    fn context(&self) -> HashMapContext<DefaultNumericTypes> {
        let mut context = HashMapContext::new();
        // Set on a fresh context: neither call can fail (no variable is typed yet; builtins are only switched off).
        let _ = context.set_builtin_functions_disabled(true);
        for (name, value) in [
            ("dbSize", self.db_size),
            ("dbSizeInUse", self.db_size_in_use),
            ("dbSizeFree", self.db_size_free),
            ("dbQuota", self.db_quota),
            ("dbQuotaUsage", self.db_quota_usage),
        ] {
            let _ = context.set_value(name.to_string(), Value::Float(value));
        }
        context
    }
}

/// Two rules are the same when they are written the same (a reload compares configurations).
impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Rule {
    /// The rule that holds for every member.
    pub fn always() -> Self {
        Rule {
            text: String::new(),
            tree: None,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_always(&self) -> bool {
        self.tree.is_none()
    }

    /// Reads and checks a rule: only the language's characters and names, balanced parentheses, a syntax
    /// evalexpr accepts, and a boolean result (tried on sample figures).
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let fail = |column: usize, message: String| RuleError {
            rule: text.to_string(),
            column,
            message,
        };
        if text.trim().is_empty() {
            return Ok(Rule::always());
        }
        // evalexpr builds and walks its tree recursively: a rule of thousands of terms overflows a thread's
        // stack. Real rules are a line.
        if text.chars().count() > MAX_RULE_CHARS {
            return Err(fail(
                MAX_RULE_CHARS + 1,
                format!("a rule is at most {MAX_RULE_CHARS} characters"),
            ));
        }
        let floats = scan(text).map_err(|(column, message)| fail(column, message))?;
        let tree = evalexpr::build_operator_tree::<DefaultNumericTypes>(&floats)
            .map_err(|e| fail(text.trim_end().chars().count(), e.to_string()))?;
        // A sample member: 1 GiB of 2 GiB in use, quota 8 GiB. Only the type of the answer matters here.
        let sample = RuleInputs::new(2 << 30, 1 << 30, 8 << 30);
        match tree.eval_with_context(&sample.context()) {
            Ok(Value::Boolean(_)) => Ok(Rule {
                text: text.to_string(),
                tree: Some(tree),
            }),
            Ok(other) => Err(fail(
                1,
                format!(
                    "the rule gives {other} where true or false is needed (compare with <, >, ==)"
                ),
            )),
            Err(e) => Err(fail(1, e.to_string())),
        }
    }

    /// Whether the rule holds for a member with these figures. An error (an integer overflow, a division of
    /// integers by zero) is the member's skip reason, never a defragmentation.
    pub fn holds(&self, inputs: &RuleInputs) -> Result<bool, String> {
        let Some(tree) = &self.tree else {
            return Ok(true);
        };
        tree.eval_boolean_with_context(&inputs.context())
            .map_err(|e| format!("rule {:?} could not be evaluated: {e}", self.text))
    }
}

/// Checks what evalexpr would accept more widely than a rule should, with the column of the first fault:
/// characters outside arithmetic and comparison, unknown names, assignment, unbalanced parentheses, `^` (XOR in
/// etcd-defrag's language, a power in evalexpr's: refused rather than read one way or the other). Returns the
/// rule with every number written as a float (`200` → `200.0`): the variables are floats, and evalexpr would
/// otherwise divide integers as integers (`1/2` is 0) and never find a float equal to an integer.
fn scan(text: &str) -> Result<String, (usize, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut open: Vec<usize> = Vec::new();
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let number: String = chars[start..i].iter().collect();
            if number.matches('.').count() > 1 || number.ends_with('.') {
                return Err((start + 1, format!("{number:?} is not a number")));
            }
            if chars.get(i).is_some_and(|c| matches!(c, 'e' | 'E')) {
                return Err((
                    i + 1,
                    "exponents are not part of a rule: write the number out, or as a product (200*1024*1024)"
                        .into(),
                ));
            }
            // A literal zero divisor: evalexpr's float division gives infinity, which every `>` would take.
            let divides = out
                .trim_end_matches(|c: char| c.is_whitespace() || c == '(' || c == '-' || c == '+')
                .ends_with(['/', '%']);
            if divides && number.parse::<f64>().is_ok_and(|n| n == 0.0) {
                return Err((start + 1, "division by zero".into()));
            }
            if number.starts_with('.') {
                out.push('0');
            }
            out.push_str(&number);
            if !number.contains('.') {
                out.push_str(".0");
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            out.push_str(&name);
            if !VARIABLES.contains(&name.as_str()) && name != "true" && name != "false" {
                return Err((
                    start + 1,
                    format!(
                        "unknown name {name:?} (the variables are {})",
                        VARIABLES.join(", ")
                    ),
                ));
            }
            continue;
        }
        match c {
            '(' => {
                open.push(column);
                if open.len() > MAX_DEPTH {
                    return Err((column, format!("parentheses nest at most {MAX_DEPTH} deep")));
                }
            }
            ')' => {
                if open.pop().is_none() {
                    return Err((column, "')' without a matching '('".into()));
                }
            }
            '=' => {
                let before = i.checked_sub(1).map(|j| chars[j]);
                let after = chars.get(i + 1).copied();
                let compares = after == Some('=') || matches!(before, Some('=' | '<' | '>' | '!'));
                if !compares {
                    return Err((column, "'=' assigns; compare with '=='".into()));
                }
            }
            '^' => {
                return Err((
                    column,
                    "'^' is XOR in etcd-defrag's rules and a power elsewhere: write the product out".into(),
                ));
            }
            c if c.is_whitespace() => {}
            // evalexpr reads `//` and `/* */` as comments: a rule would lose what follows without a word.
            '/' if matches!(chars.get(i + 1), Some('/' | '*')) => {
                return Err((column, "comments are not part of a rule".into()));
            }
            '+' | '-' | '*' | '/' | '%' | '<' | '>' | '!' | '&' | '|' => {}
            other => {
                return Err((
                    column,
                    format!("{other:?} is not part of a rule (arithmetic, comparisons, && || !)"),
                ));
            }
        }
        out.push(c);
        i += 1;
    }
    match open.pop() {
        Some(column) => Err((column, "'(' is never closed".into())),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(size: u64, in_use: u64, quota: u64) -> RuleInputs {
        RuleInputs::new(size, in_use, quota)
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn etcd_defrag_examples_evaluate_as_documented() {
        let rule = Rule::parse("dbQuotaUsage > 0.8 || dbSizeFree > 200*1024*1024").unwrap();
        // 900 of 1000 MiB quota: over 0.8.
        assert!(
            rule.holds(&member(900 * MIB, 890 * MIB, 1000 * MIB))
                .unwrap()
        );
        // 300 MiB free.
        assert!(
            rule.holds(&member(400 * MIB, 100 * MIB, 8000 * MIB))
                .unwrap()
        );
        // Neither.
        assert!(
            !rule
                .holds(&member(400 * MIB, 300 * MIB, 8000 * MIB))
                .unwrap()
        );
        let ratio = Rule::parse("dbSize - dbSizeInUse > 0.5 * dbSize && dbQuota > 0").unwrap();
        assert!(ratio.holds(&member(100, 10, 1000)).unwrap());
        assert!(!ratio.holds(&member(100, 90, 1000)).unwrap());
    }

    #[test]
    fn the_empty_rule_holds_for_every_member() {
        for text in ["", "   "] {
            let rule = Rule::parse(text).unwrap();
            assert!(rule.is_always());
            assert!(rule.holds(&member(0, 0, 0)).unwrap());
        }
    }

    #[test]
    fn derived_variables() {
        let m = member(300, 100, 600);
        assert_eq!(m.db_size_free, 200.0);
        assert_eq!(m.db_quota_usage, 0.5);
        // In use above size (a race between the two readings) is no free space, not negative space.
        assert_eq!(member(100, 150, 0).db_size_free, 0.0);
        assert_eq!(member(100, 150, 0).db_quota_usage, 0.0);
        let json = serde_json::to_value(m).unwrap();
        assert_eq!(json["dbSizeFree"], 200.0);
        assert_eq!(json["dbQuotaUsage"], 0.5);
    }

    fn column_of(text: &str) -> (usize, String) {
        let e = Rule::parse(text).unwrap_err();
        assert_eq!(e.rule, text);
        (e.column, e.message)
    }

    #[test]
    fn errors_name_their_column() {
        // A misspelt variable, at its first letter.
        let (col, msg) = column_of("dbQuotaUsage > 0.8 || dbSizeFre > 1");
        assert_eq!(col, 23);
        assert!(msg.contains("\"dbSizeFre\""), "{msg}");
        // Assignment where a comparison was meant.
        assert_eq!(column_of("dbSize = 5").0, 8);
        // A stray character.
        let (col, msg) = column_of("dbSize > 5;");
        assert_eq!(col, 11, "{msg}");
        let (col, msg) = column_of("dbSize > 5 ; 1");
        assert_eq!(col, 12);
        assert!(msg.contains("';'"), "{msg}");
        // Unbalanced parentheses, at the one that does not match.
        assert_eq!(column_of("(dbSize > 5").0, 1);
        assert_eq!(column_of("dbSize > 5)").0, 11);
        // Functions and strings are not part of the language.
        assert_eq!(column_of("math::ln(dbSize) > 1").0, 1);
        assert_eq!(column_of("dbSize > \"5\"").0, 10);
    }

    #[test]
    fn a_rule_must_be_true_or_false() {
        let (_, msg) = column_of("dbSize + 1");
        assert!(msg.contains("true or false"), "{msg}");
        // A syntax evalexpr refuses, reported at the end of the text.
        let (col, _) = column_of("dbSize > > 1");
        assert!(col >= 1);
        assert!(Rule::parse("dbSize >").is_err());
    }

    #[test]
    fn comparisons_mix_floats_and_integers() {
        let rule = Rule::parse("dbSize >= 1024 && dbQuotaUsage < 1").unwrap();
        assert!(rule.holds(&member(1024, 0, 4096)).unwrap());
        assert!(!rule.holds(&member(1023, 0, 4096)).unwrap());
        assert!(Rule::parse("!(dbSize > 1) == true").is_ok());
    }

    #[test]
    fn the_largest_rules_accepted_still_evaluate_on_a_small_stack() {
        // Test threads have 2 MiB of stack, as tokio's workers do.
        let long = format!("dbSize > {}1", "1+".repeat((MAX_RULE_CHARS - 10) / 2));
        assert!(long.len() <= MAX_RULE_CHARS);
        assert!(
            Rule::parse(&long)
                .unwrap()
                .holds(&member(1 << 30, 0, 1 << 31))
                .unwrap()
        );
        let nots = format!("{}true", "!".repeat(MAX_RULE_CHARS - 4));
        assert!(Rule::parse(&nots).is_ok());
        let deep = format!("{}dbSize > 1{}", "(".repeat(16), ")".repeat(16));
        assert!(Rule::parse(&deep).unwrap().holds(&member(2, 0, 4)).unwrap());
        assert_eq!(
            column_of(&format!("{}1{}", "(".repeat(17), ")".repeat(17))).0,
            17
        );
        assert_eq!(column_of(&"1+".repeat(300)).0, MAX_RULE_CHARS + 1);
    }

    #[test]
    fn exponents_and_zero_divisors_are_refused() {
        let (col, msg) = column_of("dbSize > 1e9");
        assert_eq!(col, 11);
        assert!(msg.contains("exponents"), "{msg}");
        assert_eq!(column_of("dbSize / 0 > 1").0, 10);
        assert_eq!(column_of("dbSize % 0.0 > 1").0, 10);
        assert_eq!(column_of("dbSize / (0) > 1").0, 11);
        assert_eq!(column_of("dbSize / -0 > 1").0, 11);
        assert_eq!(column_of("dbSizeFree > dbSize//2").0, 20);
        assert_eq!(column_of("dbSize > 1 /* dbQuota */").0, 12);
        assert!(Rule::parse("dbSize / 10 > 1").is_ok());
    }

    #[test]
    fn numbers_are_floats_like_the_variables() {
        // 1/2 is a half, not integer division's 0.
        let half = Rule::parse("dbSizeFree / dbSize > 1/2").unwrap();
        assert!(!half.holds(&member(100, 90, 1000)).unwrap());
        assert!(half.holds(&member(100, 10, 1000)).unwrap());
        // A float variable equals an integer literal of the same value.
        let quota = Rule::parse("dbQuota == 8589934592 && dbQuota != 1").unwrap();
        assert!(quota.holds(&member(1, 0, 8 << 30)).unwrap());
        assert!(
            Rule::parse("dbQuotaUsage > .5")
                .unwrap()
                .holds(&member(6, 0, 10))
                .unwrap()
        );
        assert_eq!(column_of("dbSize > 1.2.3").0, 10);
        // '^' means different things in different languages: refused.
        assert_eq!(column_of("dbSize > 2 ^ 10").0, 12);
    }
}
