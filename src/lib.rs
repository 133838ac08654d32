//! eventscope: the debugger (observer, model, detectors, time travel, GUI).

pub mod broker_cmd;
pub mod cli;
pub mod headless;
pub mod kafka;
pub mod model;
