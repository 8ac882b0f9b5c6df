//! `make install PREFIX=...` as HPC software installs (issue 15): the
//! binary, the library, man pages and shell completions generated from the
//! CLI definition, an Lmod modulefile; then Debian's Lmod in a clean shell
//! (`env -i`, Lmod's init, `module use <prefix>/share/modulefiles; module
//! load fmcache`), where the README's lines work as pasted:
//!
//! ```text
//! DLFM_OP=write-cache LD_PRELOAD=libfmcache.so python app.py
//! DLFM_OP=read-cache  LD_PRELOAD=libfmcache.so python app.py
//! ```
//!
//! (ld.so finds the bare name through the module's LD_LIBRARY_PATH; no
//! "cannot be preloaded"), `man fmcache-record` renders; `make uninstall`
//! removes what was installed and nothing else. The `srun` lines and the
//! `examples/` scripts on the 4-node cluster: `tests/tests/cluster.rs`.

use std::fs;
use std::path::Path;
use std::process::Command;

use fmcache_tests::install::{files_under, make_at, make_install, module_shell, sh_quote};
use fmcache_tests::{assert_same, fixture, read_stats, workspace};

/// The subcommands users see, each with its man page.
const SUBCOMMANDS: &[&str] = &[
    "record", "run", "inspect", "stats", "stage", "merge", "estimate", "verify", "report", "env",
];

const COMPLETIONS: &[&str] = &[
    "share/bash-completion/completions/fmcache",
    "share/zsh/site-functions/_fmcache",
    "share/fish/vendor_completions.d/fmcache.fish",
];

fn version() -> String {
    let o = Command::new(fmcache_tests::tool())
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&o.stdout);
    v.trim().strip_prefix("fmcache ").unwrap().to_string()
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn make_install_module_load_readme_lines_man_and_uninstall() {
    let fx = fixture!("install");
    let prefix = fx.tree.join("prefix");
    make_install(&prefix);

    // What was installed.
    let man1 = prefix.join("share/man/man1");
    let mut pages = vec![man1.join("fmcache.1")];
    pages.extend(
        SUBCOMMANDS
            .iter()
            .map(|s| man1.join(format!("fmcache-{s}.1"))),
    );
    for p in &pages {
        assert!(read(p).contains(".TH "), "{}: not a man page", p.display());
    }
    assert!(
        !man1.join("fmcache-install-docs.1").exists(),
        "install-docs, not part of the command line, has no page"
    );
    for c in COMPLETIONS {
        let text = read(&prefix.join(c));
        assert!(
            text.contains("record") && text.contains("verify") && !text.contains("install-docs"),
            "{c}:\n{text}"
        );
    }
    // The bash completion loads and completes fmcache.
    let o = Command::new("bash")
        .args([
            "--noprofile",
            "--norc",
            "-c",
            "source \"$0\" && complete -p fmcache",
        ])
        .arg(prefix.join(COMPLETIONS[0]))
        .output()
        .unwrap();
    assert!(o.status.success(), "bash completion: {o:?}");
    let module = prefix.join(format!("share/modulefiles/fmcache/{}.lua", version()));
    let text = read(&module);
    assert!(
        text.contains(&format!("local prefix = \"{}\"", prefix.display())),
        "{}:\n{text}",
        module.display()
    );

    // The README's lines, pasted into a clean shell with the module loaded.
    let job = fx.out.join("job");
    fs::create_dir_all(&job).unwrap();
    fs::copy(workspace().join("examples/app.py"), job.join("app.py")).unwrap();
    let script = format!(
        "cd {job}\n\
         printf '%s\\n' \"$FMCACHE_LIB\" \"$(type -P fmcache)\" \"$(type -P python)\" >where.out\n\
         python app.py >native.out 2>native.err\n\
         DLFM_OP=write-cache LD_PRELOAD=libfmcache.so python app.py >pilot.out 2>pilot.err\n\
         DLFM_OP=read-cache LD_PRELOAD=libfmcache.so FMCACHE_STATS=$PWD/stats python app.py >served.out 2>served.err\n\
         fmcache inspect fmcache.dat >inspect.out\n\
         MANPAGER=cat MANWIDTH=80 man fmcache-record >man.out 2>man.err\n",
        job = sh_quote(&job)
    );
    let o = module_shell(&prefix, &[], &script).output().unwrap();
    assert!(
        o.status.success(),
        "clean shell with the module: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let where_ = read(&job.join("where.out"));
    let mut where_ = where_.lines();
    assert_eq!(
        where_.next(),
        Some(prefix.join("lib/libfmcache.so").to_str().unwrap()),
        "$FMCACHE_LIB"
    );
    assert_eq!(
        where_.next(),
        Some(prefix.join("bin/fmcache").to_str().unwrap()),
        "fmcache on PATH"
    );
    let native = read(&job.join("native.out"));
    assert!(native.starts_with("rank 0 of 1: value "), "{native}");
    for run in ["native", "pilot", "served"] {
        let err = read(&job.join(format!("{run}.err")));
        assert!(err.is_empty(), "{run}: stderr:\n{err}");
        let out = read(&job.join(format!("{run}.out")));
        assert_same(run, "native", native.as_bytes(), run, out.as_bytes());
    }
    assert!(
        job.join("fmcache.dat").is_file(),
        "the pilot wrote ./fmcache.dat"
    );
    assert!(read(&job.join("inspect.out")).contains("entries"));
    // Served, not merely run: the python process answered from the cache.
    let stats = read_stats(&job.join("stats"));
    assert!(
        stats.processes == 1 && stats.served > 500 && stats.missed < stats.served,
        "one process, served from the cache: {stats:?}"
    );
    assert!(
        read(&job.join("stats")).contains(" copy=auditor "),
        "the auditor copy ran too (a direct start executes itself with LD_AUDIT)"
    );
    // man renders the generated page.
    let man = read(&job.join("man.out"));
    assert!(
        man.contains("fmcache-record") && man.contains("--append") && man.contains("SYNOPSIS"),
        "man fmcache-record:\n{man}{}",
        read(&job.join("man.err"))
    );

    // DESTDIR: the files go under it, the modulefile names the final place.
    let dest = fx.out.join("destdir");
    let final_prefix = Path::new("/opt/fmcache-install-test");
    make_at("install", final_prefix, Some(&dest));
    assert!(!final_prefix.exists(), "nothing written outside DESTDIR");
    let staged = dest.join("opt/fmcache-install-test");
    assert!(staged.join("bin/fmcache").is_file() && staged.join("lib/libfmcache.so").is_file());
    let text = read(&staged.join(format!("share/modulefiles/fmcache/{}.lua", version())));
    assert!(
        text.contains("local prefix = \"/opt/fmcache-install-test\""),
        "{text}"
    );
    make_at("uninstall", final_prefix, Some(&dest));
    assert_eq!(files_under(&dest), Vec::<std::path::PathBuf>::new());

    // uninstall removes what install put there, and nothing else.
    let other = prefix.join("bin/other-tool");
    fs::write(&other, "#!/bin/sh\n").unwrap();
    make_at("uninstall", &prefix, None);
    assert_eq!(
        files_under(&prefix),
        vec![other.clone()],
        "left after uninstall"
    );
    for gone in ["lib", "share"] {
        assert!(!prefix.join(gone).exists(), "{gone}/ left after uninstall");
    }
}
