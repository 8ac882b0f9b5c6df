//! A progress bar for long work (`fmcache verify`, the merge of `fmcache
//! record` and `fmcache merge`), drawn on stderr when stderr is a
//! terminal; when it is not (a pipe, a file, a batch job's log), nothing
//! is drawn and the output is exactly what it is without the bar.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting `what` (entries, paths) up to a known total, or nothing.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar for `total` items, labelled `label`, if stderr is a terminal.
    pub fn new(label: &str, what: &str, total: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let style = ProgressStyle::with_template(&format!(
            "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {what} ({{elapsed}}, {{eta}} left)"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(label.to_string());
        bar.tick();
        Progress(Some(bar))
    }

    /// `done` items finished so far.
    pub fn set(&self, done: u64) {
        if let Some(b) = &self.0 {
            b.set_position(done);
        }
    }

    pub fn inc(&self) {
        if let Some(b) = &self.0 {
            b.inc(1);
        }
    }

    /// Prints a line on stdout without tearing the bar (hidden meanwhile).
    pub fn println(&self, line: &str) {
        match &self.0 {
            Some(b) => b.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Removes the bar; what follows prints where it stood.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
