//! eventscope: the debugger (observer, model, detectors, time travel, GUI).

/// jemalloc for every allocation of the app, its tests and benches: the model
/// allocates and frees millions of small strings and tables, and glibc's malloc
/// got slower per record as they grew (see the README's *Benchmarks*).
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod backend;
pub mod broker_cmd;
pub mod cli;
pub mod folds;
pub mod gui;
pub mod headless;
pub mod inspect;
pub mod kafka;
pub mod model;
pub mod profile;
pub mod query;
pub mod registry;
pub mod schema_cmd;
