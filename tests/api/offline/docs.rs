//! The docs keep to the code, and to each other. Each fact has one home, so
//! these tests hold the homes to it:
//!
//! - every environment variable the configuration reads — found by asking
//!   `Settings::from_lookup` which keys it looks up, not from a hand-kept
//!   list — is a row of the configuration table of `docs/behaviour.md` §8,
//!   and no other table anywhere in the docs has a row for one;
//! - every relative link in the docs and in `openapi.yaml` reaches a file,
//!   and every `#anchor` a heading (GitHub's slugs);
//! - every repository path, `make` target and error message the docs quote
//!   exists; the README stays one page and names every job.
//!
//! No service: files and the library only.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use batch_processor::configuration::Settings;
use batch_processor::jobs::JOBS;
use regex::Regex;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The documents a reader is sent to: the README, everything in `docs/`,
/// the other Markdown files of the repository, and the OpenAPI document.
fn documents() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md"), root().join("openapi.yaml")];
    for dir in ["docs", ".", "tests/fixtures", "certs"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        found.sort();
        out.extend(found);
    }
    out.sort();
    out.dedup();
    out
}

fn markdown_documents() -> Vec<PathBuf> {
    documents()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect()
}

/// The lines of a Markdown text outside fenced code blocks, with their
/// numbers (from 1).
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The text of inline code spans and fenced blocks: where commands and paths are.
pub fn code(text: &str) -> Vec<String> {
    let span = Regex::new(r"`([^`]+)`").unwrap();
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push(line.to_owned());
        } else {
            out.extend(span.captures_iter(line).map(|c| c[1].to_owned()));
        }
    }
    out
}

fn backticked(text: &str) -> Vec<String> {
    let span = Regex::new(r"`([^`]+)`").unwrap();
    span.captures_iter(text).map(|c| c[1].to_owned()).collect()
}

// ---------------------------------------------------------------------------
// Configuration: one table.

/// The keys `Settings::from_lookup` looks up, found by asking it: first with
/// nothing set, then with each key it asked for set, in turn, to values that
/// open its branches (`AUTH_MODE=none` asks whether it runs on Lambda), until
/// no new key appears. A variable added to the code is found here without
/// anyone listing it.
pub fn variables_the_configuration_reads() -> &'static BTreeSet<String> {
    static VARIABLES: OnceLock<BTreeSet<String>> = OnceLock::new();
    VARIABLES.get_or_init(|| {
        const PROBES: [&str; 8] = [
            "none",
            "true",
            "transaction",
            "verify-full",
            "1",
            "public.user_roles",
            "https://id.example.com",
            "postgres://u@127.0.0.1:1/db",
        ];
        let asked = |env: &BTreeMap<&str, &str>| -> BTreeSet<String> {
            let keys = RefCell::new(BTreeSet::new());
            let _ = Settings::from_lookup(|key| {
                keys.borrow_mut().insert(key.to_owned());
                env.get(key).map(|v| (*v).to_owned())
            });
            keys.into_inner()
        };
        let mut known = asked(&BTreeMap::new());
        loop {
            let mut found = known.clone();
            for key in &known {
                for value in PROBES {
                    found.extend(asked(&BTreeMap::from([(key.as_str(), value)])));
                }
            }
            if found == known {
                break known;
            }
            known = found;
        }
    })
}

/// The text of every Rust file under `src/`.
fn sources() -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(read(&path));
            }
        }
    }
    out
}

/// Variables read outside the configuration, straight from the environment
/// (the log format and level, read before anything else is set up): every
/// `env::var("…")` / `env::var_os("…")` in `src/`.
fn variables_read_directly() -> BTreeSet<String> {
    let call = Regex::new(r#"env::var(?:_os)?\(\s*"([A-Z][A-Z0-9_]*)"\s*\)"#).unwrap();
    let mut out = BTreeSet::new();
    for text in sources() {
        out.extend(call.captures_iter(&text).map(|c| c[1].to_owned()));
    }
    out
}

/// One row of a Markdown table: its line number and its cells.
struct Row {
    line: usize,
    cells: Vec<String>,
}

/// Every table row of a Markdown text outside code blocks, separator rows left out.
fn table_rows(text: &str) -> Vec<Row> {
    prose(text)
        .into_iter()
        .filter(|(_, l)| l.trim_start().starts_with('|'))
        .map(|(line, l)| Row {
            line,
            cells: l
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect(),
        })
        .filter(|r| {
            !r.cells
                .iter()
                .all(|c| c.chars().all(|ch| "-:| ".contains(ch)))
        })
        .collect()
}

/// The lines of behaviour §8's table (first and last, inclusive).
fn configuration_table_lines(behaviour: &str) -> (usize, usize) {
    let lines: Vec<&str> = behaviour.lines().collect();
    let heading = lines
        .iter()
        .position(|l| l.starts_with("## 8. Configuration"))
        .expect("docs/behaviour.md has §8, Configuration");
    let first = (heading..lines.len())
        .find(|&i| lines[i].starts_with('|'))
        .expect("§8 has a table");
    let last = (first..lines.len())
        .take_while(|&i| lines[i].starts_with('|'))
        .last()
        .unwrap_or(first);
    assert!(
        !lines[heading + 1..first]
            .iter()
            .any(|l| l.starts_with("## ")),
        "the table after the §8 heading belongs to §8"
    );
    (first + 1, last + 1)
}

fn variable_names(cell: &str) -> Vec<String> {
    let name = Regex::new(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$").unwrap();
    backticked(cell)
        .into_iter()
        .filter(|s| name.is_match(s))
        .collect()
}

/// The variables named in the first column of behaviour §8's table.
pub fn configuration_table() -> BTreeSet<String> {
    let behaviour = read(&root().join("docs/behaviour.md"));
    let (first, last) = configuration_table_lines(&behaviour);
    table_rows(&behaviour)
        .into_iter()
        .filter(|r| (first..=last).contains(&r.line))
        .skip(1) // the header
        .flat_map(|r| variable_names(&r.cells[0]))
        .collect()
}

#[test]
fn the_configuration_is_asked_for_every_variable_it_reads() {
    // The exploration must reach the branches, or it proves little.
    let read = variables_the_configuration_reads();
    for expected in [
        "DATABASE_URL",
        "DB_SECRET_ID",
        "DB_PORT",
        "SUPABASE_URL",
        "JWT_ISSUER",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "PUBLISH_JOB_BUDGET_MS",
    ] {
        assert!(
            read.contains(expected),
            "{expected} not found; found {read:?}"
        );
    }
}

#[test]
fn every_variable_the_code_reads_is_a_row_of_the_configuration_table() {
    let table = configuration_table();
    assert!(table.len() >= 30, "§8's table parsed: {table:?}");
    let code: BTreeSet<String> = variables_the_configuration_reads()
        .iter()
        .cloned()
        .chain(variables_read_directly())
        .collect();
    let missing: Vec<&String> = code.iter().filter(|v| !table.contains(*v)).collect();
    assert!(
        missing.is_empty(),
        "read by the code but not a row of docs/behaviour.md §8: {missing:?}"
    );
}

/// A variable is tabled once: no other table in the docs has a cell that
/// starts with one (a row about it), and no other table is headed `variable`.
#[test]
fn no_variable_is_tabled_twice() {
    let table = configuration_table();
    let vars: BTreeSet<String> = table
        .iter()
        .cloned()
        .chain(variables_the_configuration_reads().iter().cloned())
        .collect();
    let behaviour_path = root().join("docs/behaviour.md");
    let (first, last) = configuration_table_lines(&read(&behaviour_path));
    let mut second = Vec::new();
    for doc in markdown_documents() {
        let text = read(&doc);
        for row in table_rows(&text) {
            if doc == behaviour_path && (first..=last).contains(&row.line) {
                continue;
            }
            let at = format!("{}:{}", relative(&doc), row.line);
            if row.cells[0].eq_ignore_ascii_case("variable") {
                second.push(format!("{at}: a second table of variables"));
            }
            for cell in &row.cells {
                let Some(rest) = cell.strip_prefix('`') else {
                    continue;
                };
                let name = rest.split(['`', '=', ' ']).next().unwrap_or("");
                if vars.contains(name) {
                    second.push(format!("{at}: a row for {name}"));
                }
            }
        }
    }
    assert!(
        second.is_empty(),
        "configuration belongs in docs/behaviour.md §8 alone: {second:#?}"
    );
}

// ---------------------------------------------------------------------------
// Links and anchors.

/// GitHub's anchor for a heading: the rendered text, lower-cased, with every
/// character but letters, digits, `-`, `_` and spaces dropped, and spaces
/// made `-`.
fn slug(heading: &str) -> String {
    let link = Regex::new(r"\[([^\]]*)\]\([^)]*\)").unwrap();
    let text = link.replace_all(heading, "$1");
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings; a repeated one gets `-1`, `-2`, …
fn anchors(text: &str) -> BTreeSet<String> {
    let heading = Regex::new(r"^#{1,6}\s+(.*?)\s*#*\s*$").unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose(text) {
        if let Some(c) = heading.captures(line) {
            let base = slug(&c[1]);
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            });
            *n += 1;
        }
    }
    out
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug("8. Configuration (environment)"),
        "8-configuration-environment"
    );
    assert_eq!(
        slug("4.2 Upgrading the original Supabase tables"),
        "42-upgrading-the-original-supabase-tables"
    );
    assert_eq!(
        slug("`make package` and `make artifact-e2e`"),
        "make-package-and-make-artifact-e2e"
    );
    assert_eq!(slug("`original_schema.sql`"), "original_schemasql");
    assert_eq!(
        slug("orchestrate: chunks, exactly once, isolation"),
        "orchestrate-chunks-exactly-once-isolation"
    );
    assert_eq!(
        slug("API Gateway's JWT authorizer (optional)"),
        "api-gateways-jwt-authorizer-optional"
    );
    assert_eq!(slug("a — b"), "a--b");
    let repeated = anchors("# Notes\n## Notes\n```\n# not a heading\n```\n## Notes\n");
    assert_eq!(
        repeated,
        BTreeSet::from(["notes".into(), "notes-1".into(), "notes-2".into()])
    );
}

/// `[text](target)` links outside code, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let span = Regex::new(r"`[^`]*`").unwrap();
    let link = Regex::new(r#"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)"#).unwrap();
    let mut out = Vec::new();
    for (n, line) in prose(text) {
        let line = span.replace_all(line, "");
        out.extend(link.captures_iter(&line).map(|c| (n, c[1].to_owned())));
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for doc in documents() {
        let text = read(&doc);
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let at = format!("{}:{line}: {target}", relative(&doc));
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().expect("a document's folder").join(path)
            };
            checked += 1;
            if !file.exists() {
                broken.push(format!("{at}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                if file.extension().is_some_and(|x| x == "md")
                    && !anchors(&read(&file)).contains(anchor)
                {
                    broken.push(format!("{at}: no such heading"));
                }
            }
        }
    }
    assert!(checked >= 50, "links found: {checked}");
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

/// A path the docs quote on its own (`scripts/pg.sh`, `tests/api/offline/`)
/// is in the repository.
#[test]
fn every_repository_path_the_docs_quote_exists() {
    let path = Regex::new(
        r"^(?:src|sql|scripts|migrations|docs|tests|events|benches|certs|\.ci)/[A-Za-z0-9_./-]*$",
    )
    .unwrap();
    let mut checked = 0;
    let mut missing = Vec::new();
    // supabase_live_schema.md quotes the app's own repository, not this one.
    let about_another_repository = root().join("tests/fixtures/supabase_live_schema.md");
    for doc in markdown_documents() {
        if doc == about_another_repository {
            continue;
        }
        for span in backticked(&read(&doc)) {
            let p = span.trim_end_matches(['.', ',']);
            if !path.is_match(p) {
                continue;
            }
            checked += 1;
            if !root().join(p).exists() {
                missing.push(format!("{}: {p}", relative(&doc)));
            }
        }
    }
    assert!(checked >= 20, "paths found: {checked}");
    assert!(missing.is_empty(), "quoted but absent: {missing:#?}");
}

// ---------------------------------------------------------------------------
// Make targets.

fn make_targets() -> BTreeMap<String, bool> {
    // target → whether `make help` lists it (a `## ` comment).
    read(&root().join("Makefile"))
        .lines()
        .filter_map(|l| {
            let (target, rest) = l.split_once(':')?;
            let ok = !target.is_empty()
                && target
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            ok.then(|| (target.to_owned(), rest.contains("## ")))
        })
        .collect()
}

#[test]
fn every_make_target_the_docs_name_exists_and_every_listed_one_is_named() {
    let targets = make_targets();
    let make = Regex::new(r"\bmake ([a-z][a-z0-9-]*)").unwrap();
    let mut named = BTreeSet::new();
    let mut unknown = Vec::new();
    for doc in markdown_documents() {
        for text in code(&read(&doc)) {
            for c in make.captures_iter(&text) {
                if !targets.contains_key(&c[1]) {
                    unknown.push(format!("{}: make {}", relative(&doc), &c[1]));
                }
                named.insert(c[1].to_owned());
            }
        }
    }
    assert!(unknown.is_empty(), "not Makefile targets: {unknown:?}");
    let unnamed: Vec<&String> = targets
        .iter()
        .filter(|(t, listed)| **listed && !named.contains(*t))
        .map(|(t, _)| t)
        .collect();
    assert!(
        unnamed.is_empty(),
        "targets `make help` lists that no doc mentions: {unnamed:?}"
    );
}

// ---------------------------------------------------------------------------
// The README and the jobs.

#[test]
fn the_readme_is_one_page_with_the_commands_and_the_way_to_deploy_first() {
    let readme = read(&root().join("README.md"));
    assert!(
        readme.len() <= 12 * 1024,
        "README.md is {} bytes; the rest belongs in docs/",
        readme.len()
    );
    // The first screen: the two commands, the quick loop, and the way to deploy.
    let first_screen: String = readme.lines().take(50).collect::<Vec<_>>().join("\n");
    for needed in [
        "make demo",
        "make test",
        "make check",
        "make package",
        "sam deploy",
        "docs/deploy.md",
    ] {
        assert!(
            first_screen.contains(needed),
            "{needed} in the README's first 50 lines"
        );
    }
}

/// The jobs tables of the README and of behaviour §1 and §3 name every job of
/// `jobs::JOBS`, and no other.
#[test]
fn every_jobs_table_names_every_job() {
    let jobs: BTreeSet<String> = JOBS.iter().map(|j| j.name.to_owned()).collect();
    assert_eq!(jobs.len(), 5);
    let tables = [
        ("README.md", "jobType"),
        ("docs/behaviour.md", "jobType"),
        ("docs/behaviour.md", "job"),
    ];
    for (file, header) in tables {
        let text = read(&root().join(file));
        let rows = table_rows(&text);
        let start = rows
            .iter()
            .position(|r| r.cells[0].trim_matches('`') == header)
            .unwrap_or_else(|| panic!("{file} has a table headed {header}"));
        let mut named = BTreeSet::new();
        for (i, row) in rows[start + 1..].iter().enumerate() {
            if row.line != rows[start].line + 2 + i {
                break; // the table ended
            }
            named.insert(row.cells[0].trim_matches('`').to_owned());
        }
        assert_eq!(named, jobs, "{file}, the table headed {header}");
    }
}

// ---------------------------------------------------------------------------
// Error messages.

/// The messages behaviour §2's status table and §3's list of 401s quote are
/// the code's. A quoted message is the code's when a string literal in `src/`
/// produces it (`"Batch is {}, not {}"` gives `Batch is <status>, not
/// needs_review`), or when each piece of it between `<placeholders>` is in
/// `src/` (a 503's reason is a literal of its own).
#[test]
fn every_error_message_behaviour_quotes_is_one_the_code_writes() {
    let behaviour = read(&root().join("docs/behaviour.md"));
    let source = sources().concat();
    // Every literal with a `{…}` as a pattern: `{…}` stands for any text. Its
    // own words must be most of a message it produces: `"{name} {p:?}"`
    // produces anything.
    let literal = Regex::new(r#""((?:[^"\\]|\\.)*)""#).unwrap();
    let hole = Regex::new(r"\{[^}]*\}").unwrap();
    let escaped_hole = Regex::new(r"\\\{[^}]*?\\\}").unwrap();
    let formats: Vec<(Regex, usize)> = literal
        .captures_iter(&source)
        .filter(|c| c[1].contains('{'))
        .filter_map(|c| {
            let words = hole.replace_all(&c[1], "").len();
            let pattern = escaped_hole
                .replace_all(&regex::escape(&c[1]), ".+")
                .into_owned();
            let pattern = Regex::new(&format!("^{pattern}$")).ok()?;
            (words >= 10).then_some((pattern, words))
        })
        .collect();

    let rows = table_rows(&behaviour);
    let status_table: Vec<&Row> = {
        let start = rows
            .iter()
            .position(|r| r.cells == ["status", "when"])
            .expect("§2's table of statuses");
        rows[start + 1..]
            .iter()
            .take_while(|r| r.cells[0].len() == 3 && r.cells[0].parse::<u16>().is_ok())
            .collect()
    };
    assert!(status_table.len() >= 9, "§2's statuses parsed");
    let unauthorized: String = behaviour
        .split("\n\n")
        .find(|p| p.starts_with("401 messages:"))
        .expect("§3 lists the 401 messages")
        .to_owned();
    let quoted: Vec<String> = status_table
        .iter()
        .flat_map(|r| backticked(&r.cells[1]))
        .chain(backticked(&unauthorized))
        .filter(|m| {
            m.contains(' ')
                && m.starts_with(|c: char| c.is_alphabetic())
                && !["<=", ">=", "=", "{"].iter().any(|s| m.contains(s))
        })
        .collect();
    assert!(quoted.len() >= 25, "messages found: {quoted:?}");
    let placeholder = Regex::new(r"<[^>]*>").unwrap();
    let mut absent = Vec::new();
    for message in &quoted {
        let filled = placeholder.replace_all(message, "X");
        if formats
            .iter()
            .any(|(f, words)| 2 * words >= filled.len() && f.is_match(&filled))
        {
            continue;
        }
        for piece in placeholder.split(message) {
            let piece = piece.trim_matches([' ', ',']);
            if !piece.is_empty() && !source.contains(piece) {
                absent.push(format!("{message:?} ({piece:?})"));
            }
        }
    }
    assert!(
        absent.is_empty(),
        "behaviour.md quotes messages the code never writes: {absent:#?}"
    );
}
