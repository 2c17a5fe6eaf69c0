//! `--enable-log-rotation` with `--log-rotation-config-json`: the one log file is rotated as
//! etcd's log (through lumberjack) is. A line that would take the file past `maxsize`
//! megabytes first moves the file aside to `<name>-<time><ext>` (the time it was rotated,
//! `2006-01-02T15-04-05.000` in UTC, or local time with `localtime`) and starts a new one;
//! then, away from the writer, the moved file is gzipped (`compress`) and the oldest backups
//! go: beyond `maxbackups` of them, or older than `maxage` days (0: keep).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use time::{OffsetDateTime, UtcOffset};

/// What `--log-rotation-config-json` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationConfig {
    pub max_bytes: u64,
    pub max_age: Option<Duration>,
    pub max_backups: usize,
    /// Backup names in this offset from UTC (`localtime`, read once at start), else UTC.
    pub offset: UtcOffset,
    pub compress: bool,
}

/// etcd's default `--log-rotation-config-json`.
pub const DEFAULT_CONFIG_JSON: &str =
    r#"{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}"#;

impl RotationConfig {
    /// Reads the flag's JSON as etcd reads it: unknown fields ignored, a field of the wrong
    /// type refused.
    pub fn from_json(text: &str) -> Result<RotationConfig, String> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("improperly formatted log rotation config: {e}"))?;
        let invalid = |field: &str, kind: &str| {
            format!("invalid log rotation config: {field} must be {kind}")
        };
        let number = |field: &str| match value.get(field) {
            None | Some(serde_json::Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| invalid(field, "a whole number")),
        };
        let flag = |field: &str| match value.get(field) {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(v) => v.as_bool().ok_or_else(|| invalid(field, "true or false")),
        };
        // lumberjack's zero size is its default of 100 MB.
        let megabytes = match number("maxsize")? {
            0 => 100,
            size => size,
        };
        let days = number("maxage")?;
        let offset = if flag("localtime")? {
            UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC)
        } else {
            UtcOffset::UTC
        };
        Ok(RotationConfig {
            max_bytes: megabytes.saturating_mul(1024 * 1024),
            max_age: (days > 0).then(|| Duration::from_secs(days.saturating_mul(86_400))),
            max_backups: usize::try_from(number("maxbackups")?).unwrap_or(usize::MAX),
            offset,
            compress: flag("compress")?,
        })
    }
}

/// The log file, rotated by size.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    config: RotationConfig,
}

impl RotatingFile {
    /// Opens `path` for appending (created if missing), counting what it holds already.
    pub fn open(path: &Path, config: RotationConfig) -> io::Result<RotatingFile> {
        let file = append_to(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            config,
        })
    }

    /// Writes `bytes`, rotating first if they would take the file past its size.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = bytes.len() as u64;
        if self.size > 0 && self.size + len > self.config.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let now = OffsetDateTime::now_utc().to_offset(self.config.offset);
        let backup = backup_path(&self.path, now);
        fs::rename(&self.path, &backup)?;
        self.file = append_to(&self.path)?;
        self.size = 0;
        let (path, config) = (self.path.clone(), self.config.clone());
        // Compressing megabytes and listing the directory are not the writer's to wait for.
        let _ = std::thread::Builder::new()
            .name("detcd-log-rotation".into())
            .spawn(move || {
                if config.compress {
                    let _ = compress(&backup);
                }
                let _ = prune(&path, &config, SystemTime::now());
            });
        Ok(())
    }
}

fn append_to(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `<dir>/<stem>-<time><ext>` for the log file `<dir>/<stem><ext>`.
fn backup_path(path: &Path, at: OffsetDateTime) -> PathBuf {
    let (stem, ext) = stem_and_extension(path);
    let time = format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}.{:03}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    );
    path.with_file_name(format!("{stem}-{time}{ext}"))
}

fn stem_and_extension(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(dot) if dot > 0 => (name[..dot].to_string(), name[dot..].to_string()),
        _ => (name, String::new()),
    }
}

/// Replaces `backup` with `backup.gz`.
fn compress(backup: &Path) -> io::Result<()> {
    let mut gz_name = backup.as_os_str().to_owned();
    gz_name.push(".gz");
    let mut encoder =
        flate2::write::GzEncoder::new(File::create(&gz_name)?, flate2::Compression::default());
    io::copy(&mut File::open(backup)?, &mut encoder)?;
    encoder.finish()?.sync_all()?;
    fs::remove_file(backup)
}

/// Removes the backups of `path` beyond the newest `max_backups`, and those older than
/// `max_age` (by their names' times, as lumberjack judges them).
fn prune(path: &Path, config: &RotationConfig, now: SystemTime) -> io::Result<()> {
    let (stem, ext) = stem_and_extension(path);
    let prefix = format!("{stem}-");
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut backups: Vec<(String, PathBuf)> = fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&prefix)?;
            let time = rest
                .strip_suffix(&format!("{ext}.gz"))
                .or_else(|| rest.strip_suffix(ext.as_str()))?;
            (time.len() == "2006-01-02T15-04-05.000".len())
                .then(|| (time.to_string(), entry.path()))
        })
        .collect();
    // The names' times sort as text: newest first.
    backups.sort_by(|a, b| b.0.cmp(&a.0));
    for (index, (time, backup)) in backups.iter().enumerate() {
        let surplus = config.max_backups > 0 && index >= config.max_backups;
        let expired = config
            .max_age
            .is_some_and(|age| backup_time(time).is_some_and(|t| t + age < now));
        if surplus || expired {
            fs::remove_file(backup)?;
        }
    }
    Ok(())
}

/// The moment a backup's name records, to the second (the offset it was written in aside:
/// a day's age is not decided by hours).
fn backup_time(time: &str) -> Option<SystemTime> {
    let number = |range: std::ops::Range<usize>| time.get(range)?.parse::<u32>().ok();
    let date = time::Date::from_calendar_date(
        i32::try_from(number(0..4)?).ok()?,
        time::Month::try_from(u8::try_from(number(5..7)?).ok()?).ok()?,
        u8::try_from(number(8..10)?).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(number(11..13)?).ok()?,
        u8::try_from(number(14..16)?).ok()?,
        u8::try_from(number(17..19)?).ok()?,
    )
    .ok()?;
    let seconds = date.with_time(clock).assume_utc().unix_timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("detcd-log-rotation-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_config_reads_as_etcd_reads_it() {
        let default = RotationConfig::from_json(DEFAULT_CONFIG_JSON).unwrap();
        assert_eq!(default.max_bytes, 100 << 20);
        assert_eq!(
            (default.max_age, default.max_backups, default.compress),
            (None, 0, false)
        );
        let set = RotationConfig::from_json(
            r#"{"maxsize":1,"maxage":2,"maxbackups":3,"compress":true,"other":1}"#,
        )
        .unwrap();
        assert_eq!(set.max_bytes, 1 << 20);
        assert_eq!(set.max_age, Some(Duration::from_secs(2 * 86_400)));
        assert_eq!((set.max_backups, set.compress), (3, true));
        assert!(RotationConfig::from_json("{bad")
            .unwrap_err()
            .starts_with("improperly formatted log rotation config: "));
        assert!(RotationConfig::from_json(r#"{"maxsize":"x"}"#)
            .unwrap_err()
            .starts_with("invalid log rotation config: "));
    }

    #[test]
    fn a_full_file_moves_aside_and_old_backups_go() {
        let dir = temp_dir("size");
        let path = dir.join("member.log");
        let config = RotationConfig {
            max_bytes: 100,
            max_age: None,
            max_backups: 2,
            offset: UtcOffset::UTC,
            compress: false,
        };
        let mut file = RotatingFile::open(&path, config.clone()).unwrap();
        let line = [b'x'; 59];
        for _ in 0..3 {
            file.write_all(&line).unwrap();
            // Backup names are to the millisecond: two rotations need two of them.
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            fs::read(&path).unwrap().len(),
            59,
            "the third line started a new file"
        );
        for _ in 0..40 {
            if names(&dir).len() == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let all = names(&dir);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(
            all.iter()
                .all(|n| n.starts_with("member") && n.ends_with(".log")),
            "{all:?}"
        );
        prune(
            &path,
            &RotationConfig {
                max_backups: 1,
                ..config
            },
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(names(&dir).len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn backups_are_compressed_and_expire_by_their_names() {
        let dir = temp_dir("age");
        let path = dir.join("member.log");
        let old = dir.join("member-2020-01-02T03-04-05.678.log");
        fs::write(&old, b"old lines\n").unwrap();
        compress(&old).unwrap();
        let gz = dir.join("member-2020-01-02T03-04-05.678.log.gz");
        assert!(gz.exists() && !old.exists());
        let recent = backup_path(&path, OffsetDateTime::now_utc());
        fs::write(&recent, b"recent\n").unwrap();
        let config = RotationConfig {
            max_bytes: 100,
            max_age: Some(Duration::from_secs(86_400)),
            max_backups: 0,
            offset: UtcOffset::UTC,
            compress: true,
        };
        prune(&path, &config, SystemTime::now()).unwrap();
        assert!(!gz.exists() && recent.exists());
        assert_eq!(
            backup_time("2020-01-02T03-04-05.678"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_934_245))
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
