//! eventscope: the debugger (observer, model, detectors, time travel, GUI).

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
