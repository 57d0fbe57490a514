#![recursion_limit = "256"]
//! Black-box tests against a real Postgres: every test creates, migrates and
//! drops its own database, so they run in parallel.

mod helpers;
mod infra;

mod auth;
mod connections;
mod delivery;
mod http;
mod jwks;
mod live_database;
mod migrations;
mod observability;
mod orchestrate;
mod process_order;
mod reliability;
mod review_batch;
mod runbook;
mod template;
mod tier_filter;
