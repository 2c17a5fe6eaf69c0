//! The member's log, as etcd's `--logger`, `--log-level` and `--log-outputs` shape it: which
//! lines are written (a line below the level is dropped) and where (stderr, stdout, files, in
//! any combination). Lines stay detcd's text, one per event.
//!
//! One log per process, set once when the member starts; before that (and in the tests that
//! run a member inside their own process), lines go to stderr at `info`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use super::log_rotation::{RotatingFile, RotationConfig};

/// zap's levels, which etcd's `--log-level` names. detcd writes `debug` to `error`; a level
/// above `error` silences it, as it silences etcd but for its crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
    DPanic,
    Panic,
    Fatal,
}

const LEVELS: [(&str, Level); 7] = [
    ("debug", Level::Debug),
    ("info", Level::Info),
    ("warn", Level::Warn),
    ("error", Level::Error),
    ("dpanic", Level::DPanic),
    ("panic", Level::Panic),
    ("fatal", Level::Fatal),
];

/// Where lines go: etcd's `default` is stderr, and so is `systemd/journal` here (a unit's
/// stderr reaches the journal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stderr,
    Stdout,
    File(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub level: Level,
    pub outputs: Vec<Output>,
    /// `--enable-log-rotation`: how the one file output is rotated.
    pub rotation: Option<RotationConfig>,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: Level::Info,
            outputs: vec![Output::Stderr],
            rotation: None,
        }
    }
}

impl LogConfig {
    /// Reads `--logger`, `--log-level` and `--log-outputs` as etcd does, with etcd's words for
    /// a logger it does not know. `capnslog`, etcd 3.4's deprecated logger, logs as `zap` does.
    pub fn from_flags(logger: &str, level: &str, outputs: &str) -> Result<LogConfig, String> {
        match logger {
            "zap" => {}
            "capnslog" => {
                eprintln!("detcd: --logger=capnslog is deprecated (removed in etcd 3.5); logging as with --logger=zap")
            }
            other => return Err(format!("unknown logger option {other:?}")),
        }
        let level = LEVELS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(level))
            .map(|(_, l)| *l)
            .ok_or_else(|| {
                let names: Vec<&str> = LEVELS.iter().map(|(n, _)| *n).collect();
                format!(
                    "--log-level: unknown level {level:?} (one of {})",
                    names.join(", ")
                )
            })?;
        let outputs = outputs
            .split(',')
            .map(str::trim)
            .map(|o| match o {
                "" => Err("--log-outputs: an empty output".to_string()),
                "default" | "stderr" | "systemd/journal" => Ok(Output::Stderr),
                "stdout" => Ok(Output::Stdout),
                path => Ok(Output::File(PathBuf::from(path))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LogConfig {
            level,
            outputs,
            rotation: None,
        })
    }

    /// Adds `--enable-log-rotation` and `--log-rotation-config-json`: rotation needs exactly
    /// one file among the outputs, as in etcd.
    pub fn with_rotation(mut self, enabled: bool, config_json: &str) -> Result<LogConfig, String> {
        if !enabled {
            return Ok(self);
        }
        let files = self
            .outputs
            .iter()
            .filter(|o| matches!(o, Output::File(_)))
            .count();
        if files != 1 {
            return Err(
                "--log-outputs requires a single file path when --log-rotate-config-json is \
                 defined"
                    .into(),
            );
        }
        self.rotation = Some(RotationConfig::from_json(config_json)?);
        Ok(self)
    }
}

struct Log {
    level: Level,
    sinks: Vec<Sink>,
}

enum Sink {
    Stderr,
    Stdout,
    File(Mutex<File>),
    Rotating(Mutex<RotatingFile>),
}

static LOG: OnceLock<Log> = OnceLock::new();

/// Opens the log's files (appending, created if missing) and makes `config` the process's
/// log. A second call keeps the first log: one member per process.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let sinks = config
        .outputs
        .iter()
        .map(|output| match output {
            Output::Stderr => Ok(Sink::Stderr),
            Output::Stdout => Ok(Sink::Stdout),
            Output::File(path) => match &config.rotation {
                Some(rotation) => RotatingFile::open(path, rotation.clone())
                    .map(|f| Sink::Rotating(Mutex::new(f))),
                None => OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(|f| Sink::File(Mutex::new(f))),
            }
            .map_err(|e| format!("couldn't open sink {:?}: {e}", path.display().to_string())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let _ = LOG.set(Log {
        level: config.level,
        sinks,
    });
    Ok(())
}

/// Writes one line at `level`, if the log's level lets it through.
pub fn write(level: Level, line: fmt::Arguments) {
    let Some(log) = LOG.get() else {
        if level >= Level::Info {
            eprintln!("{line}");
        }
        return;
    };
    if level < log.level {
        return;
    }
    let text = format!("{line}\n");
    for sink in &log.sinks {
        // A log line that cannot be written is dropped: there is nowhere left to say so.
        let _ = match sink {
            Sink::Stderr => std::io::stderr().write_all(text.as_bytes()),
            Sink::Stdout => std::io::stdout().write_all(text.as_bytes()),
            Sink::File(file) => file
                .lock()
                .map_or(Ok(()), |mut f| f.write_all(text.as_bytes())),
            Sink::Rotating(file) => file
                .lock()
                .map_or(Ok(()), |mut f| f.write_all(text.as_bytes())),
        };
    }
}

macro_rules! log_at {
    ($level:ident, $($arg:tt)*) => {
        $crate::server::log::write($crate::server::log::Level::$level, format_args!($($arg)*))
    };
}
macro_rules! info {
    ($($arg:tt)*) => { $crate::server::log::log_at!(Info, $($arg)*) };
}
macro_rules! warning {
    ($($arg:tt)*) => { $crate::server::log::log_at!(Warn, $($arg)*) };
}
macro_rules! error {
    ($($arg:tt)*) => { $crate::server::log::log_at!(Error, $($arg)*) };
}
pub(crate) use {error, info, log_at, warning};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_as_etcd_reads_them() {
        let c = LogConfig::from_flags("zap", "warn", "stdout,/tmp/x.log,default").unwrap();
        assert_eq!(c.level, Level::Warn);
        assert_eq!(
            c.outputs,
            vec![
                Output::Stdout,
                Output::File(PathBuf::from("/tmp/x.log")),
                Output::Stderr
            ]
        );
        assert_eq!(
            LogConfig::from_flags("zap", "info", "default").unwrap(),
            LogConfig::default()
        );
        assert_eq!(
            LogConfig::from_flags("foo", "info", "default").unwrap_err(),
            "unknown logger option \"foo\""
        );
        let one_file = LogConfig::from_flags("zap", "info", "stderr,/tmp/x.log").unwrap();
        assert!(one_file
            .clone()
            .with_rotation(true, "{}")
            .unwrap()
            .rotation
            .is_some());
        assert!(one_file
            .with_rotation(false, "{bad")
            .unwrap()
            .rotation
            .is_none());
        for outputs in ["stderr", "/tmp/a.log,/tmp/b.log"] {
            let rotated = LogConfig::from_flags("zap", "info", outputs)
                .unwrap()
                .with_rotation(true, "{}");
            assert_eq!(
                rotated.unwrap_err(),
                "--log-outputs requires a single file path when --log-rotate-config-json is \
                 defined"
            );
        }
        assert!(LogConfig::from_flags("zap", "loud", "default")
            .unwrap_err()
            .contains("unknown level \"loud\""));
        assert!(LogConfig::from_flags("zap", "info", "stderr,").is_err());
        assert_eq!(
            LogConfig::from_flags("capnslog", "ERROR", "stderr")
                .unwrap()
                .level,
            Level::Error
        );
    }

    #[test]
    fn a_file_that_cannot_be_opened_stops_the_member_with_etcds_words() {
        let config = LogConfig {
            level: Level::Info,
            outputs: vec![Output::File(PathBuf::from("/nonexistent-dir/x.log"))],
            rotation: None,
        };
        assert!(init(&config)
            .unwrap_err()
            .starts_with("couldn't open sink \"/nonexistent-dir/x.log\": "));
    }
}
