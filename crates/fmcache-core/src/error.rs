//! Why a stage could not be attached, built or kept (`stage.rs`), and
//! why a merge could not write the cache (`merge.rs`).
//!
//! Callers tell apart what they act on: a cache that is not there, one
//! this user may not use, one that failed the format's checks, one that
//! changed; the rest are system calls that failed on something named.
//! Each displays as the one line the library prints before it runs
//! uncached (or unrecorded).

use crate::path::show;
use crate::sys::strerror;

#[derive(Debug)]
pub enum StageError {
    /// The cache file does not exist.
    NotFound,
    /// The cache, its stage or the stage base is not this user's to use
    /// (owner, mode, recorder, a symlink); the text says which rule.
    Refused(String),
    /// The cache or a stage's index failed the format's checks.
    Format(fmcache_format::OpenError),
    /// The stage no longer stands for the cache (re-recorded since,
    /// another checksum, a served file changed since the pilot).
    Changed(String),
    /// A system call on `what` failed with `errno`.
    Sys { what: String, errno: i32 },
    /// A blob of the cache did not unpack to its size and hash.
    Blob {
        path: Vec<u8>,
        err: fmcache_format::BlobError,
    },
    /// A cache names a file outside the stage (`..`, a relative path).
    Unsafe(Vec<u8>),
    /// A staging thread panicked.
    Panicked,
    /// Building the stage under `base` failed.
    Staging {
        base: Vec<u8>,
        cause: Box<StageError>,
    },
}

impl StageError {
    /// A failed system call on `what`: for `map_err`.
    pub fn sys(what: impl Into<String>) -> impl FnOnce(i32) -> StageError {
        let what = what.into();
        move |errno| StageError::Sys { what, errno }
    }

    /// `sys` for rustix's error type.
    pub fn rustix(what: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> StageError {
        let what = what.into();
        move |e| StageError::Sys {
            what,
            errno: e.raw_os_error(),
        }
    }
}

impl core::fmt::Display for StageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StageError::NotFound => f.write_str("not found"),
            StageError::Refused(why) | StageError::Changed(why) => f.write_str(why),
            StageError::Format(e) => write!(f, "{e}"),
            StageError::Sys { what, errno } if what.is_empty() => f.write_str(&strerror(*errno)),
            StageError::Sys { what, errno } => write!(f, "{what}: {}", strerror(*errno)),
            StageError::Blob { path, err } => write!(f, "{}: {err}", show(path)),
            StageError::Unsafe(p) => write!(f, "{}: not a plain absolute path", show(p)),
            StageError::Panicked => f.write_str("a staging thread panicked"),
            StageError::Staging { base, cause } => {
                write!(f, "staging into {}: {cause}", show(base))
            }
        }
    }
}

impl std::error::Error for StageError {}

impl From<fmcache_format::OpenError> for StageError {
    fn from(e: fmcache_format::OpenError) -> Self {
        StageError::Format(e)
    }
}

/// Why `merge::merge` wrote no cache.
#[derive(Debug)]
pub enum MergeError {
    /// The record directory failed its checks (`recdir`).
    RecordDir {
        path: Vec<u8>,
        why: crate::recdir::Refusal,
    },
    /// Its lock could not be taken.
    Lock {
        dir: Vec<u8>,
        why: crate::recdir::Refusal,
    },
    /// Writing the new cache failed at `step` (the temporary is removed).
    Write {
        step: WriteStep,
        path: Vec<u8>,
        err: std::io::Error,
    },
    /// A system call on `what` failed with `errno`.
    Sys { what: String, errno: i32 },
}

/// The steps of writing a cache: into `<cache>.rec/cache.tmp.<pid>`,
/// then renamed over the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStep {
    Create,
    Write,
    Chmod,
    Rename,
}

impl core::fmt::Display for MergeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MergeError::RecordDir { path, why } => write!(f, "{}: {why}", show(path)),
            MergeError::Lock { dir, why } => write!(f, "lock {}/lock: {why}", show(dir)),
            MergeError::Write { step, path, err } => {
                let p = show(path);
                match step {
                    WriteStep::Create => write!(f, "create {p}: {err}"),
                    WriteStep::Write => write!(f, "write {p}: {err}"),
                    WriteStep::Chmod => write!(f, "write {p}: chmod: {err}"),
                    WriteStep::Rename => write!(f, "rename to {p}: {err}"),
                }
            }
            MergeError::Sys { what, errno } if what.is_empty() => f.write_str(&strerror(*errno)),
            MergeError::Sys { what, errno } => write!(f, "{what}: {}", strerror(*errno)),
        }
    }
}

impl std::error::Error for MergeError {}

#[cfg(test)]
mod tests {
    use super::StageError;

    #[test]
    fn each_kind_reads_as_one_line() {
        let cases = [
            (StageError::NotFound, "not found".to_string()),
            (
                StageError::sys("stage lock")(libc::EACCES),
                format!("stage lock: {}", crate::sys::strerror(libc::EACCES)),
            ),
            (
                StageError::Staging {
                    base: b"/dev/shm/x".to_vec(),
                    cause: Box::new(StageError::Unsafe(b"../etc".to_vec())),
                },
                "staging into /dev/shm/x: ../etc: not a plain absolute path".to_string(),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
            assert!(!want.contains('\n'));
        }
    }
}
