//! `docs/deploy.md` is followed literally by someone who has never seen the
//! code: every template parameter, stack output or resource, `make` target,
//! file and environment variable it names must exist. Template names are read
//! from the transformed template (`crate::template`), targets from the
//! Makefile. No database and no AWS endpoint.

use std::collections::BTreeSet;
use std::path::Path;

use regex::Regex;

use crate::offline::docs;
use crate::template::defaults;

const RUNBOOK: &str = include_str!("../../docs/deploy.md");

/// The text inside backticks and fenced code blocks: where names are.
fn code() -> Vec<String> {
    docs::code(RUNBOOK)
}

fn template_names() -> BTreeSet<String> {
    let s = defaults();
    let mut names = BTreeSet::new();
    for section in ["Parameters", "Outputs", "Resources"] {
        names.extend(s.0[section].as_object().expect("a section").keys().cloned());
    }
    names
}

/// CamelCase names with two humps or more (`ScheduleEnabled`, `JobsUrl`):
/// every one in code must be the template's, so a misspelt parameter fails.
#[test]
fn every_template_name_the_runbook_uses_exists() {
    let known = template_names();
    let camel = Regex::new(r"\b([A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+)\b").unwrap();
    // AWS CLI and supabase-js vocabulary the runbook quotes that is not ours.
    let aws_words = [
        "OutputKey",
        "OutputValue",
        "SecretString",
        "FunctionVersion",
        "LastModified",
        "FunctionsHttpError",
        "FilterArns",
    ];
    let mut seen = BTreeSet::new();
    for text in code() {
        for c in camel.captures_iter(&text) {
            let name = &c[1];
            if aws_words.contains(&name) {
                continue;
            }
            assert!(
                known.contains(name),
                "docs/deploy.md names {name}, which template.yaml has not"
            );
            seen.insert(name.to_owned());
        }
    }
    // What a deploy must be given, and what the runbook's steps depend on, is there.
    let s = defaults();
    for (name, definition) in s.0["Parameters"].as_object().expect("parameters") {
        if definition.get("Default").is_none() {
            assert!(seen.contains(name), "the runbook says what to give {name}");
        }
    }
    for name in [
        "MigrateSecretArn",
        "DbPooler",
        "DbCaFile",
        "SupabaseUrl",
        "AdminRolesTable",
        "ScheduleEnabled",
        "CorsAllowOrigin",
        "LiveAliasArn",
        "JobsUrl",
        "FunctionName",
    ] {
        assert!(seen.contains(name), "the runbook uses {name}");
    }
    // The outputs the `out` helper reads are outputs.
    let outputs = s.0["Outputs"].as_object().expect("outputs");
    let out = Regex::new(r"\$\(out (\w+)\)").unwrap();
    for c in out.captures_iter(RUNBOOK) {
        assert!(outputs.contains_key(&c[1]), "output {}", &c[1]);
    }
}

#[test]
fn every_make_target_the_runbook_names_exists() {
    let makefile = include_str!("../../Makefile");
    let targets: BTreeSet<&str> = makefile
        .lines()
        .filter_map(|l| l.split_once(':').map(|(t, _)| t))
        .filter(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .collect();
    let make = Regex::new(r"\bmake ([a-z][a-z0-9-]*)").unwrap();
    let mut named = BTreeSet::new();
    for text in code() {
        for c in make.captures_iter(&text) {
            assert!(targets.contains(&c[1]), "make {} is not a target", &c[1]);
            named.insert(c[1].to_owned());
        }
    }
    for needed in ["tools", "package", "migrate"] {
        assert!(named.contains(needed), "the runbook runs make {needed}");
    }
}

#[test]
fn every_file_and_variable_the_runbook_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path =
        Regex::new(r"(?:^|[\s`])((?:sql|certs|scripts|migrations|docs|tests)/[A-Za-z0-9_./-]*)")
            .unwrap();
    let mut files = 0;
    for text in code() {
        for c in path.captures_iter(&text) {
            let p = c[1].trim_end_matches('.');
            // certs/ receives the operator's own file: the folder is what must exist.
            let p = if p.starts_with("certs/") { "certs" } else { p };
            assert!(root.join(p).exists(), "{p} does not exist");
            files += 1;
        }
    }
    assert!(files >= 3, "sql/function-role.sql, certs/, migrations/");
    // Environment variables it names are rows of behaviour §8's table (shell
    // variables the runbook sets itself aside).
    let table = crate::offline::docs::configuration_table();
    let var = Regex::new(r"^[A-Z][A-Z0-9]*_[A-Z0-9_]+$").unwrap();
    let assigned: BTreeSet<String> = Regex::new(r"\b([A-Z][A-Z0-9_]*)=")
        .unwrap()
        .captures_iter(RUNBOOK)
        .map(|c| c[1].to_owned())
        .collect();
    for text in code() {
        if var.is_match(&text) && !text.starts_with("AWS_") && !assigned.contains(&text) {
            assert!(
                table.contains(&text),
                "{text} is not a row of docs/behaviour.md §8"
            );
        }
    }
}

/// A long `migrate` must not be given up on and sent again by the CLI, and
/// what the runbook invokes is the alias the stack runs, not `$LATEST`.
#[test]
fn every_invocation_in_the_runbook_waits_and_goes_to_live() {
    let fences: Vec<String> = {
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in RUNBOOK.lines() {
            if line.trim_start().starts_with("```") {
                match current.take() {
                    Some(block) => blocks.push(block),
                    None => current = Some(String::new()),
                }
            } else if let Some(block) = current.as_mut() {
                block.push_str(line);
                block.push('\n');
            }
        }
        blocks
    };
    let mut invokes = 0;
    for block in &fences {
        let joined = block.replace("\\\n", " ");
        for command in joined.lines().filter(|l| l.contains("aws lambda invoke")) {
            assert!(command.contains("--cli-read-timeout 0"), "{command}");
            assert!(command.contains("--function-name \"$LIVE\""), "{command}");
            invokes += 1;
        }
    }
    assert!(invokes >= 3, "migrate, the dry run, publish-events");
}
