//! A directory laid out as the kubelet lays out a ConfigMap volume, updated as the kubelet
//! updates it (its AtomicWriter): each key is a symlink `<key> -> ..data/<key>`, `..data` is a
//! symlink to a timestamped directory, and an update writes a new directory, points a fresh
//! `..data_tmp` symlink at it and renames that onto `..data`, so every key changes at once
//! while the paths the process was given stay the same.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

pub struct ConfigMapDir {
    pub dir: PathBuf,
    version: usize,
}

impl ConfigMapDir {
    /// A volume at `dir` (created) holding `files` (key, content).
    pub fn new(dir: &Path, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut cm = Self {
            dir: dir.to_path_buf(),
            version: 0,
        };
        cm.update(files);
        for (key, _) in files {
            symlink(Path::new("..data").join(key), dir.join(key)).unwrap();
        }
        cm
    }

    /// The path a pod reads `key` at.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Replace the content of every key at once (the same keys as at creation).
    pub fn update(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let version = format!("..2027_01_15_08_00_00.{}", self.version);
        let data = self.dir.join(&version);
        std::fs::create_dir(&data).unwrap();
        for (key, content) in files {
            std::fs::write(data.join(key), content).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}
