#![recursion_limit = "256"]
//! Black-box tests. Those under `offline` need no service and run in
//! `make check`; every other test has its own database on a real Postgres (a
//! clone of a template migrated once per run, dropped at the end), so they
//! run in parallel.

mod helpers;
mod infra;

mod connections;
mod delivery;
mod http;
mod jwks;
mod live_database;
mod migrations;
mod observability;
mod offline;
mod orchestrate;
mod process_order;
mod put_events;
mod reliability;
mod review_batch;
mod runbook;
mod supabase_project;
mod template;
mod tier_filter;
