//! fmcache's shared machinery: paths, raw file-system access, the answers
//! the server derives from a cache, the recorder's journal, merging,
//! staging and configuration. Used by the preload library and the tool.

pub mod answer;
pub mod carry;
pub mod config;
pub mod error;
pub mod journal;
pub mod ldcache;
pub mod ldsearch;
pub mod live;
pub mod merge;
pub mod path;
pub mod privacy;
pub mod recdir;
pub mod scope;
pub mod stage;
pub mod sys;
pub mod workers;
