//! A GitHub-style DIFC guard in Rust for the guard host benchmarks (`bench/guard_bench.ts`,
//! `bench/model_bench.ts`): the size and shape of a real toolchain guard (std, an allocator,
//! formatting, a tool catalogue), labeling the demo upstream's tools like `guards/demo`.
//!
//! - `label_agent(policy)`: parses the `allow-only` policy once per instance and answers the agent's
//!   labels: `private:<scope>` secrecy and the integrity levels up to `min-integrity` per scope.
//! - `label_resource`: looks the tool up in the catalogue (operation and resource kind), resolves
//!   the repository's visibility through `call_backend("get_repo")` (cached per instance, in a
//!   `BTreeMap`: no `HashMap`, whose seeding would read WASI randomness) and labels the resource.
//! - `label_response`: path labels for every item of a listing, integrity from the author's
//!   association and the policy's trusted / blocked users.
//!
//! No WASI calls on any path but a panic's message (which ends the call anyway).

mod abi;
mod catalog;
mod json;
mod schemas;
mod secrets;

use json::{obj, s, strs, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Integrity levels, lowest first: each level carries every lower one.
const LEVELS: [&str; 4] = ["none", "unapproved", "approved", "merged"];

#[derive(Clone, Debug)]
enum Repos {
    All,
    Public,
    Patterns(Vec<String>),
}

#[derive(Clone, Debug)]
struct Policy {
    repos: Repos,
    min_integrity: usize,
    blocked_users: Vec<String>,
    trusted_users: Vec<String>,
    trusted_bots: Vec<String>,
    approval_labels: Vec<String>,
}

thread_local! {
    static POLICY: RefCell<Option<Policy>> = const { RefCell::new(None) };
    static VISIBILITY: RefCell<BTreeMap<String, bool>> = const { RefCell::new(BTreeMap::new()) };
}

fn level_index(name: &str) -> Option<usize> {
    LEVELS.iter().position(|l| l.eq_ignore_ascii_case(name))
}

fn parse_policy(input: &[u8]) -> Result<Policy, String> {
    let v = json::parse(input).map_err(|e| format!("policy is not JSON: {} at {}", e.what, e.at))?;
    let allow = v.get("allow-only").or_else(|| v.get("allowonly")).ok_or("policy has no allow-only")?;
    let repos = match allow.get("repos") {
        Some(Value::Str(x)) if x == "all" => Repos::All,
        Some(Value::Str(x)) if x == "public" => Repos::Public,
        Some(Value::Arr(a)) if !a.is_empty() => {
            let mut out = Vec::new();
            for r in a {
                let r = r.as_str().ok_or("repos entries must be strings")?;
                if !valid_pattern(r) {
                    return Err(format!("invalid repository pattern {r:?}"));
                }
                out.push(r.to_ascii_lowercase());
            }
            Repos::Patterns(out)
        }
        _ => return Err("allow-only.repos must be \"all\", \"public\" or a non-empty array".into()),
    };
    let min = allow.str_at("min-integrity").ok_or("allow-only.min-integrity is required")?;
    let min_integrity = level_index(min).ok_or_else(|| format!("unknown min-integrity {min:?}"))?;
    Ok(Policy {
        repos,
        min_integrity,
        blocked_users: lower(allow.strings("blocked-users")),
        trusted_users: lower(allow.strings("trusted-users")),
        trusted_bots: lower(v.strings("trusted-bots")),
        approval_labels: lower(allow.strings("approval-labels")),
    })
}

fn lower(xs: Vec<String>) -> Vec<String> {
    xs.into_iter().map(|x| x.to_ascii_lowercase()).collect()
}

/// `owner/repo`, `owner/*` or `owner/prefix*`.
fn valid_pattern(p: &str) -> bool {
    let Some((owner, repo)) = p.split_once('/') else { return false };
    let name_ok = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
    name_ok(owner) && (repo == "*" || name_ok(repo.strip_suffix('*').unwrap_or(repo)))
}

fn matches(pattern: &str, repo: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => repo.starts_with(prefix),
        None => pattern == repo,
    }
}

impl Policy {
    fn scopes(&self) -> Vec<String> {
        match &self.repos {
            Repos::All | Repos::Public => vec!["*".into()],
            Repos::Patterns(p) => p.clone(),
        }
    }
    /// The scope token of a repository inside the policy, or None when it is outside.
    fn scope_of(&self, repo: &str, private: bool) -> Option<String> {
        match &self.repos {
            Repos::All => Some("*".into()),
            Repos::Public if !private => Some("*".into()),
            Repos::Public => None,
            Repos::Patterns(p) => p.iter().find(|x| matches(x, repo)).cloned(),
        }
    }
}

fn integrity_tags(level: usize, scope: &str) -> Vec<String> {
    LEVELS[..=level].iter().map(|l| format!("{l}:{scope}")).collect()
}

fn label_agent_impl(input: &[u8]) -> Result<String, String> {
    let policy = parse_policy(input)?;
    let scopes = policy.scopes();
    let secrecy: Vec<String> = scopes.iter().map(|x| format!("private:{x}")).collect();
    let integrity: Vec<String> = scopes.iter().flat_map(|x| integrity_tags(policy.min_integrity, x)).collect();
    let kind = match policy.repos {
        Repos::All => "All",
        Repos::Public => "Public",
        Repos::Patterns(_) => "Repo",
    };
    let answer = obj(vec![
        ("agent", obj(vec![("secrecy", strs(secrecy)), ("integrity", strs(integrity))])),
        ("difc_mode", s("filter")),
        (
            "normalized_policy",
            obj(vec![("scope_kind", s(kind)), ("min-integrity", s(LEVELS[policy.min_integrity]))]),
        ),
    ]);
    POLICY.with(|p| *p.borrow_mut() = Some(policy));
    Ok(json::to_string(&answer))
}

fn policy() -> Result<Policy, String> {
    POLICY.with(|p| p.borrow().clone()).ok_or_else(|| "label_agent has not run".to_string())
}

/// The repository a tool call names: `repo: "owner/name"` or `owner` + `repo`.
fn repo_of(args: &Value) -> Option<String> {
    let repo = args.str_at("repo")?;
    let full = match args.str_at("owner") {
        Some(owner) if !repo.contains('/') => format!("{owner}/{repo}"),
        _ => repo.to_owned(),
    };
    full.contains('/').then(|| full.to_ascii_lowercase())
}

/// Whether the repository is private: asked once per instance; unknown counts as private.
fn is_private(repo: &str) -> bool {
    if let Some(v) = VISIBILITY.with(|c| c.borrow().get(repo).copied()) {
        return v;
    }
    let mut args = String::from("{\"repo\":");
    json::write_str(&mut args, repo);
    args.push('}');
    let private = abi::backend("get_repo", &args)
        .and_then(|r| json::parse(&r).ok())
        .and_then(|r| unwrap_text(&r))
        .map(|v| v.str_at("visibility") != Some("public"))
        .unwrap_or(true);
    VISIBILITY.with(|c| c.borrow_mut().insert(repo.to_owned(), private));
    private
}

/// The JSON inside an MCP tool result's text content (concatenated), if any.
fn unwrap_text(result: &Value) -> Option<Value> {
    let content = result.get("content")?.as_arr()?;
    let mut text = String::new();
    for c in content {
        if c.str_at("type") == Some("text") {
            text.push_str(c.str_at("text").unwrap_or(""));
        }
    }
    json::parse(text.as_bytes()).ok()
}

fn resource_labels(policy: &Policy, repo: &str, private: bool, description: String) -> Value {
    let secrecy = if private { vec![format!("private:{repo}")] } else { vec![] };
    let scope = policy.scope_of(repo, private).unwrap_or_else(|| repo.to_owned());
    obj(vec![
        ("description", Value::Str(description)),
        ("secrecy", strs(secrecy)),
        ("integrity", strs(integrity_tags(0, &scope))),
    ])
}

fn label_resource_impl(input: &[u8]) -> Result<String, String> {
    let policy = policy()?;
    let v = json::parse(input).map_err(|e| format!("input is not JSON: {}", e.what))?;
    let tool = v.str_at("tool_name").ok_or("tool_name missing")?;
    let args = v.get("tool_args").cloned().unwrap_or(Value::Obj(vec![]));
    let entry = catalog::lookup(tool);
    // Arguments the tool's schema does not allow make the call a write (the restrictive case).
    let operation = match (entry, schema_problem(tool, &args)) {
        (Some(e), None) => e.operation,
        (_, Some(problem)) => {
            abi::log(0, &format!("{tool}: {problem}; labeled as a write"));
            "write"
        }
        (None, None) => "write",
    };
    let answer = match repo_of(&args) {
        Some(repo) => {
            let private = is_private(&repo);
            let kind = entry.map(|e| e.resource).unwrap_or("repository");
            obj(vec![
                ("resource", resource_labels(&policy, &repo, private, format!("{kind}:{repo}"))),
                ("operation", s(operation)),
            ])
        }
        None => obj(vec![
            (
                "resource",
                obj(vec![("description", s(tool)), ("secrecy", strs(vec![])), ("integrity", strs(vec![]))]),
            ),
            ("operation", s(operation)),
        ]),
    };
    Ok(json::to_string(&answer))
}

/// Why `args` do not match the tool's input schema, if they do not.
fn schema_problem(tool: &str, args: &Value) -> Option<String> {
    let i = schemas::SCHEMAS.binary_search_by(|(n, _)| n.cmp(&tool)).ok()?;
    let schema = json::parse(schemas::SCHEMAS[i].1.as_bytes()).ok()?;
    let Value::Obj(fields) = args else { return Some("arguments are not an object".into()) };
    let props = schema.get("properties");
    for req in schema.strings("required") {
        if args.get(&req).is_none() {
            return Some(format!("missing required argument {req:?}"));
        }
    }
    for (k, v) in fields {
        let Some(p) = props.and_then(|p| p.get(k)) else {
            return Some(format!("unknown argument {k:?}"));
        };
        let ok = match (p.str_at("type"), v) {
            (Some("string"), Value::Str(_)) | (Some("boolean"), Value::Bool(_)) | (Some("array"), Value::Arr(_)) => true,
            (Some("number"), Value::Num(n)) => n.is_finite(),
            (Some("number"), Value::Str(x)) => x.parse::<f64>().is_ok(),
            _ => false,
        };
        if !ok {
            return Some(format!("argument {k:?} is not a {}", p.str_at("type").unwrap_or("value")));
        }
    }
    None
}

/// Integrity level of an item from its author.
fn item_level(policy: &Policy, item: &Value) -> usize {
    let author = item
        .str_at("author")
        .or_else(|| item.get("user").and_then(|u| u.str_at("login")))
        .unwrap_or("")
        .to_ascii_lowercase();
    if policy.blocked_users.contains(&author) {
        return 0;
    }
    if policy.trusted_users.contains(&author) || policy.trusted_bots.contains(&author) {
        return 2;
    }
    let approved = item
        .get("labels")
        .and_then(Value::as_arr)
        .map(|ls| {
            ls.iter().any(|l| {
                let name = l.as_str().or_else(|| l.str_at("name")).unwrap_or("").to_ascii_lowercase();
                policy.approval_labels.contains(&name)
            })
        })
        .unwrap_or(false);
    match item.str_at("author_association").unwrap_or("NONE") {
        "OWNER" | "MEMBER" | "COLLABORATOR" => 2,
        _ if approved => 2,
        "CONTRIBUTOR" | "FIRST_TIME_CONTRIBUTOR" | "FIRST_TIMER" => 1,
        _ => 1,
    }
}

fn label_response_impl(input: &[u8]) -> Result<String, String> {
    let policy = policy()?;
    let v = json::parse(input).map_err(|e| format!("input is not JSON: {}", e.what))?;
    let tool = v.str_at("tool_name").unwrap_or("");
    let args = v.get("tool_args").cloned().unwrap_or(Value::Obj(vec![]));
    let Some(result) = v.get("tool_result") else { return Ok(String::new()) };
    let Some(body) = unwrap_text(result) else { return Ok(String::new()) };
    let repo = repo_of(&args).or_else(|| body.str_at("repo").map(str::to_ascii_lowercase));
    let Some(repo) = repo else { return Ok(String::new()) };
    let Some(items) = body.get("items").and_then(Value::as_arr) else { return Ok(String::new()) };
    let private = is_private(&repo);
    let scope = policy.scope_of(&repo, private).unwrap_or_else(|| repo.clone());
    let kind = catalog::lookup(tool).map(|e| e.item).unwrap_or("item");
    let mut labeled = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let number = item.get("number").and_then(Value::as_f64).map(|n| n as i64);
        let description = match number {
            Some(n) => format!("{kind}:{repo}#{n}"),
            None => format!("{kind}:{repo}[{i}]"),
        };
        let mut secrecy = if private { vec![format!("private:{repo}")] } else { vec![] };
        // An item whose text holds something shaped like a credential is secret beyond the repository.
        let text = [item.str_at("title"), item.str_at("body")].iter().flatten().copied().collect::<Vec<_>>().join("\n");
        if let Some(kind) = secrets::find(&text) {
            secrecy.push(format!("secret:{repo}"));
            abi::log(1, &format!("{kind} in {description}"));
        }
        labeled.push(obj(vec![
            ("path", Value::Str(format!("/items/{i}"))),
            (
                "labels",
                obj(vec![
                    ("description", Value::Str(description)),
                    ("secrecy", strs(secrecy)),
                    ("integrity", strs(integrity_tags(item_level(&policy, item), &scope))),
                ]),
            ),
        ]));
    }
    let answer = obj(vec![
        ("labeled_paths", Value::Arr(labeled)),
        ("default_labels", resource_labels(&policy, &repo, private, format!("repo:{repo}"))),
        ("items_path", s("/items")),
    ]);
    Ok(json::to_string(&answer))
}

#[no_mangle]
pub extern "C" fn label_agent(input: *const u8, input_len: i32, out: *mut u8, out_size: i32) -> i32 {
    abi::run(input, input_len, out, out_size, label_agent_impl)
}

#[no_mangle]
pub extern "C" fn label_resource(input: *const u8, input_len: i32, out: *mut u8, out_size: i32) -> i32 {
    abi::run(input, input_len, out, out_size, label_resource_impl)
}

#[no_mangle]
pub extern "C" fn label_response(input: *const u8, input_len: i32, out: *mut u8, out_size: i32) -> i32 {
    abi::run(input, input_len, out, out_size, label_response_impl)
}
