//! `fmcache stats`: sum the per-process lines the library appends to
//! $FMCACHE_STATS at exit:
//!
//! ```text
//! pid=<n> op=<record|serve|off> served=<n> missed=<n> passthrough=<n> recorded=<n> unstaged_libs=<n> exe=<argv0>
//! ```
//!
//! Before `exe`, a serving process's line may hold up to 16
//! `missed_path=<path>` fields (space, `%`, `=` and control bytes as `%XX`):
//! the first paths it asked for that the cache did not hold, as the
//! program spelled them.
//!
//! `unstaged_libs` (the auditor's line; optional, older builds lack it):
//! libraries ld.so loaded from outside the stage and the system library
//! directories while serving, that is from the shared file system.
//!
//! Keys are space separated; `exe` comes last and its value runs to the
//! end of the line. Unknown keys are ignored.
//!
//! Beside each file, `<file>.live.<node>` (fmcache_core::live) holds the
//! counters of every process from its start; slots still live there are
//! processes that wrote no line (killed by a signal, or still running):
//! they are added to the sums and listed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::ExitCode;

use serde_json::json;

use crate::launch;

/// Sum the per-process statistics the library writes to $FMCACHE_STATS
///
/// Prints processes, probes served from the cache, missed, passed through
/// and recorded, the served fraction served / (served + missed), and the
/// libraries loaded from the shared file system while serving.
/// Malformed lines are reported and counted, not summed.
#[derive(clap::Args)]
pub struct Args {
    /// Statistics files [default: $FMCACHE_STATS].
    #[arg(value_name = "FILE")]
    files: Vec<OsString>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One well-formed line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Line {
    pub op: String,
    /// Written by the auditor copy of a process whose preload copy writes
    /// its own line: counts, but not another process.
    pub auditor: bool,
    pub served: u64,
    pub missed: u64,
    pub passthrough: u64,
    pub recorded: u64,
    pub unstaged_libs: u64,
    /// The first paths the process missed (`missed_path=`, repeatable).
    pub missed_paths: Vec<String>,
}

/// Parses one line; the error says what is wrong with it.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let mut out = Line::default();
    let (mut pid, mut op, mut exe) = (false, false, false);
    let mut seen = [false; 4];
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        let end = rest.find(' ').unwrap_or(rest.len());
        let token = &rest[..end];
        let Some((key, value)) = token.split_once('=') else {
            return Err(format!("no '=' in {token:?}"));
        };
        if key == "exe" {
            // The rest of the line, spaces included.
            exe = true;
            break;
        }
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key}={value:?} is not a count"))
        };
        match key {
            "pid" => {
                num()?;
                pid = true;
            }
            "op" if !value.is_empty() => {
                out.op = value.to_string();
                op = true;
            }
            "op" => return Err("empty op".into()),
            "copy" => out.auditor = value == "auditor",
            "served" => (out.served, seen[0]) = (num()?, true),
            "missed" => (out.missed, seen[1]) = (num()?, true),
            "passthrough" => (out.passthrough, seen[2]) = (num()?, true),
            "recorded" => (out.recorded, seen[3]) = (num()?, true),
            "unstaged_libs" => out.unstaged_libs = num()?,
            "missed_path" => out.missed_paths.push(unescape(value)),
            _ => {}
        }
        rest = &rest[end..];
    }
    let missing: Vec<&str> = [
        (pid, "pid"),
        (op, "op"),
        (seen[0], "served"),
        (seen[1], "missed"),
    ]
    .into_iter()
    .chain([
        (seen[2], "passthrough"),
        (seen[3], "recorded"),
        (exe, "exe"),
    ])
    .filter(|(have, _)| !have)
    .map(|(_, k)| k)
    .collect();
    if !missing.is_empty() {
        return Err(format!("missing {}", missing.join(", ")));
    }
    Ok(out)
}

#[derive(Default)]
pub struct Totals {
    pub files: Vec<String>,
    pub processes: u64,
    pub ops: BTreeMap<String, u64>,
    pub served: u64,
    pub missed: u64,
    pub passthrough: u64,
    pub recorded: u64,
    pub unstaged_libs: u64,
    pub malformed: u64,
    /// Processes with a live slot and no line: (node, pid, exe).
    pub not_ended: Vec<(String, u32, String)>,
    /// Paths the cache did not hold, with how many processes asked (the
    /// first few per process, from the `missed_path` fields).
    pub missed_paths: BTreeMap<String, u64>,
}

/// A `missed_path` value back to the path (`%XX` escapes; anything else
/// as is).
fn unescape(v: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16);
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let (b'%', Some(&h), Some(&l)) = (b[i], b.get(i + 1), b.get(i + 2)) {
            if let (Some(h), Some(l)) = (hex(h), hex(l)) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Totals {
    /// The missed paths, most asked first.
    pub fn missed_by_count(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self
            .missed_paths
            .iter()
            .map(|(p, n)| (p.as_str(), *n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }
}

/// The slots still live in one node's live file, as lines plus their
/// (pid, exe); `None` if it is not such a file.
fn live_slots(bytes: &[u8]) -> Option<Vec<(Line, u32, String)>> {
    use fmcache_core::live;
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if bytes.len() < live::FILE_SIZE || u64_at(0)? != live::MAGIC {
        return None;
    }
    // Offsets from the layout itself (fmcache_core::live), read as bytes:
    // the file may be another build's, or damaged.
    use core::mem::{offset_of, size_of};
    let (header, slot) = (size_of::<live::Header>(), size_of::<live::Slot>());
    let counter = |o: usize, i: usize| u64_at(o + offset_of!(live::Slot, counters) + 8 * i);
    let used = (u32_at(offset_of!(live::Header, used))? as usize).min(live::SLOTS);
    let mut out = Vec::new();
    for i in 0..used {
        let o = header + slot * i;
        if u32_at(o + offset_of!(live::Slot, state))? != live::LIVE {
            continue;
        }
        let flags = u32_at(o + offset_of!(live::Slot, flags))?;
        let op = match flags >> live::OP_SHIFT {
            1 => "record",
            2 => "serve",
            _ => "off",
        };
        let at = o + offset_of!(live::Slot, exe);
        let exe = &bytes[at..at + 16];
        let exe = String::from_utf8_lossy(&exe[..exe.iter().position(|&b| b == 0).unwrap_or(16)]);
        out.push((
            Line {
                op: op.into(),
                auditor: flags & live::AUDITOR != 0,
                served: counter(o, 0)?,
                missed: counter(o, 1)?,
                passthrough: counter(o, 2)?,
                recorded: counter(o, 3)?,
                unstaged_libs: u32_at(o + offset_of!(live::Slot, unstaged_libs))?.into(),
                missed_paths: Vec::new(),
            },
            u32_at(o + offset_of!(live::Slot, pid))?,
            exe.into_owned(),
        ));
    }
    Some(out)
}

/// `<file>.live.*` beside `file`: (node, path).
fn live_files(file: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let Some(name) = file.file_name() else {
        return Vec::new();
    };
    let prefix = fmcache_core::live::prefix_of(name.as_bytes());
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let mut v: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name();
            let node = n.as_bytes().strip_prefix(prefix.as_slice())?.to_vec();
            Some((String::from_utf8_lossy(&node).into_owned(), e.path()))
        })
        .collect();
    v.sort();
    v
}

impl Totals {
    fn add(&mut self, l: Line) {
        if !l.auditor {
            self.processes += 1;
            *self.ops.entry(l.op).or_default() += 1;
        }
        self.served += l.served;
        self.missed += l.missed;
        self.passthrough += l.passthrough;
        self.recorded += l.recorded;
        self.unstaged_libs += l.unstaged_libs;
        for p in l.missed_paths {
            *self.missed_paths.entry(p).or_default() += 1;
        }
    }
    pub fn served_fraction(&self) -> Option<f64> {
        let asked = self.served + self.missed;
        (asked > 0).then(|| self.served as f64 / asked as f64)
    }
}

/// Malformed lines reported one by one before the rest are only counted.
const SHOW_MALFORMED: u64 = 10;

pub fn main(args: Args) -> Result<ExitCode, String> {
    let files = if args.files.is_empty() {
        match std::env::var_os("FMCACHE_STATS").filter(|v| !v.is_empty()) {
            Some(f) => vec![f],
            None => return Err("no statistics file given and FMCACHE_STATS is not set".into()),
        }
    } else {
        args.files
    };
    let t = collect(&files)?;
    let fraction = t.served_fraction();
    if args.json {
        println!("{}", t.to_json());
    } else {
        print_text(&t, fraction);
    }
    Ok(ExitCode::SUCCESS)
}

/// Sums the statistics files (and the live files beside them).
pub fn collect(files: &[OsString]) -> Result<Totals, String> {
    let mut t = Totals {
        files: files
            .iter()
            .map(|f| f.to_string_lossy().into_owned())
            .collect(),
        ..Totals::default()
    };
    for f in files {
        let name = f.to_string_lossy();
        // A live file named beside its statistics file (a shell glob such
        // as `stats.*` catches both) is read through that file, below.
        if name
            .rsplit_once(".live.")
            .is_some_and(|(base, _)| files.iter().any(|g| g.to_string_lossy() == base))
        {
            continue;
        }
        let live = live_files(std::path::Path::new(f));
        // Every process killed before writing a line: only the live files.
        let bytes = match std::fs::read(f) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !live.is_empty() => Vec::new(),
            r => r.map_err(|e| format!("{name}: {}", launch::io_reason(&e)))?,
        };
        for (node, path) in live {
            let Ok(live) = std::fs::read(&path) else {
                continue;
            };
            match live_slots(&live) {
                Some(slots) => {
                    for (l, pid, exe) in slots {
                        if !l.auditor {
                            t.not_ended.push((node.clone(), pid, exe));
                        }
                        t.add(l);
                    }
                }
                None => eprintln!(
                    "fmcache: {}: not a live counters file, ignored",
                    path.display()
                ),
            }
        }
        // Not one statistics line in it (a cache, some other file): refused
        // rather than summed as zeros. Checked before anything is counted.
        let lines = || {
            bytes.split(|&b| b == b'\n').map(|raw| {
                String::from_utf8_lossy(raw)
                    .trim_end_matches('\r')
                    .to_string()
            })
        };
        let nonblank = lines().filter(|l| !l.trim().is_empty()).count();
        if nonblank > 0 && !lines().any(|l| parse_line(&l).is_ok()) {
            return Err(format!(
                "{name}: not a statistics file (no line of the form `pid=N op=OP served=N ... exe=CMD`, \
                 as the library writes to $FMCACHE_STATS)"
            ));
        }
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let text = String::from_utf8_lossy(raw);
            let text = text.trim_end_matches('\r');
            if text.trim().is_empty() {
                continue;
            }
            match parse_line(text) {
                Ok(l) => t.add(l),
                Err(why) => {
                    t.malformed += 1;
                    if t.malformed <= SHOW_MALFORMED {
                        eprintln!("fmcache: {name}:{}: malformed line ({why})", i + 1);
                    }
                }
            }
        }
    }
    if t.malformed > SHOW_MALFORMED {
        eprintln!(
            "fmcache: {} more malformed lines",
            t.malformed - SHOW_MALFORMED
        );
    }
    Ok(t)
}

impl Totals {
    /// What `fmcache stats --json` prints (and `fmcache report` embeds).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "files": self.files,
            "processes": self.processes,
            "ops": self.ops,
            "served": self.served,
            "missed": self.missed,
            "passthrough": self.passthrough,
            "recorded": self.recorded,
            "unstaged_libs": self.unstaged_libs,
            "served_fraction": self.served_fraction(),
            "malformed": self.malformed,
            "not_ended": self.not_ended.iter().map(|(node, pid, exe)| json!({"node": node, "pid": pid, "exe": exe})).collect::<Vec<_>>(),
            "missed_paths": self.missed_by_count().iter().take(100).map(|(p, n)| json!({"path": p, "processes": n})).collect::<Vec<_>>(),
        })
    }
}

fn print_text(t: &Totals, fraction: Option<f64>) {
    {
        let ops: Vec<String> = t.ops.iter().map(|(op, n)| format!("{op} {n}")).collect();
        if ops.is_empty() {
            println!("processes        {}", t.processes);
        } else {
            println!("processes        {}  ({})", t.processes, ops.join(", "));
        }
        println!("served           {}", t.served);
        println!("missed           {}", t.missed);
        println!("passthrough      {}", t.passthrough);
        println!("recorded         {}", t.recorded);
        if t.unstaged_libs > 0 {
            println!(
                "unstaged libs    {}  (libraries loaded from the shared file system, not the \
                 stage, while serving: re-record the cache with a pilot that loads them)",
                t.unstaged_libs
            );
        } else {
            println!("unstaged libs    0");
        }
        match fraction {
            Some(f) => println!("served fraction  {f:.4} ({:.1}%)", f * 100.0),
            None => println!("served fraction  n/a (nothing served or missed)"),
        }
        if t.malformed > 0 {
            println!("malformed lines  {}", t.malformed);
        }
        let missed = t.missed_by_count();
        if !missed.is_empty() {
            println!(
                "missed paths     {}  (the first few per process: not recorded by the pilot, or directories it only walked through, which always pass through):",
                missed.len()
            );
            for (p, n) in missed.iter().take(10) {
                println!("  {n:>6}  {p}");
            }
            if missed.len() > 10 {
                println!("  ...");
            }
        }
        if !t.not_ended.is_empty() {
            let shown: Vec<String> = t
                .not_ended
                .iter()
                .take(10)
                .map(|(node, pid, exe)| format!("{exe} (pid {pid} on {node})"))
                .collect();
            println!(
                "not ended        {}  (killed by a signal, or still running; counted above): {}{}",
                t.not_ended.len(),
                shown.join(", "),
                if t.not_ended.len() > 10 { ", ..." } else { "" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_line_with_spaces_in_exe() {
        let l = parse_line("pid=12 op=serve served=5 missed=1 passthrough=2 recorded=0 new=7 exe=/usr/bin/my prog -x").unwrap();
        assert_eq!(
            l,
            Line {
                op: "serve".into(),
                auditor: false,
                served: 5,
                missed: 1,
                passthrough: 2,
                recorded: 0,
                unstaged_libs: 0,
                missed_paths: Vec::new(),
            }
        );
    }

    #[test]
    fn the_auditor_copy_counts_but_is_no_process() {
        let mut t = Totals::default();
        t.add(
            parse_line("pid=3 op=serve served=50 missed=1 passthrough=0 recorded=0 exe=py")
                .unwrap(),
        );
        t.add(
            parse_line(
                "pid=3 op=serve copy=auditor served=7 missed=0 passthrough=0 recorded=0 \
                 unstaged_libs=4 exe=py",
            )
            .unwrap(),
        );
        assert_eq!((t.processes, t.served, t.missed), (1, 57, 1));
        assert_eq!(t.unstaged_libs, 4);
    }

    #[test]
    fn key_order_is_free_and_exe_may_be_empty() {
        let l =
            parse_line("op=record recorded=9 pid=1 passthrough=0 missed=0 served=0 exe=").unwrap();
        assert_eq!(l.recorded, 9);
    }

    #[test]
    fn missed_paths_are_fields_with_escapes() {
        let l = parse_line(
            "pid=3 op=serve served=1 missed=2 passthrough=0 recorded=0 missed_path=/a%20b/c%3Dd missed_path=/x%25 exe=p q",
        )
        .unwrap();
        assert_eq!(l.missed_paths, ["/a b/c=d", "/x%"]);
        assert_eq!(unescape("%zz%4"), "%zz%4");
    }

    #[test]
    fn refuses_bad_lines() {
        assert!(parse_line("pid=12 op=serve served=5").is_err());
        assert!(
            parse_line("pid=12 op=serve served=x missed=1 passthrough=2 recorded=0 exe=a").is_err()
        );
        assert!(parse_line("garbage").is_err());
        assert!(
            parse_line("pid=-1 op=serve served=1 missed=1 passthrough=2 recorded=0 exe=a").is_err()
        );
    }
}
