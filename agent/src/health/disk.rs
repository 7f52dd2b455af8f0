//! Log directory filesystems, by `statvfs(2)`.

use std::path::{Path, PathBuf};

use super::{HealthError, HealthSample, Stage};

/// One log directory's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiskSample {
    /// The log directory as configured (the `path` label).
    pub(crate) path: String,
    /// `(f_blocks - f_bfree) * f_frsize`: everything not free, including root's reserve.
    pub(crate) used_bytes: u64,
    /// `f_blocks * f_frsize`.
    pub(crate) size_bytes: u64,
}

/// (used, size) in bytes from the `statvfs` block counts.
pub(crate) fn usage(
    blocks: u64,
    blocks_free: u64,
    fragment_size: u64,
) -> Result<(u64, u64), String> {
    let used_blocks = blocks
        .checked_sub(blocks_free)
        .ok_or_else(|| format!("{blocks_free} free blocks exceed the {blocks} blocks in total"))?;
    let size = blocks
        .checked_mul(fragment_size)
        .ok_or_else(|| format!("{blocks} blocks of {fragment_size} bytes overflow"))?;
    // used_blocks <= blocks, so this cannot overflow once size did not.
    let used = used_blocks.saturating_mul(fragment_size);
    Ok((used, size))
}

/// `statvfs` of one directory.
pub(crate) fn read(dir: &Path) -> Result<DiskSample, HealthError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|errno| HealthError::Read {
        stage: Stage::Disk,
        path: dir.to_path_buf(),
        reason: format!("statvfs: {}", errno.desc()),
    })?;
    #[allow(clippy::unnecessary_cast)] // the libc field types differ between platforms
    let (used_bytes, size_bytes) = usage(
        st.blocks() as u64,
        st.blocks_free() as u64,
        st.fragment_size() as u64,
    )
    .map_err(|reason| HealthError::parse(Stage::Disk, dir, reason))?;
    Ok(DiskSample {
        path: dir.display().to_string(),
        used_bytes,
        size_bytes,
    })
}

/// One [`DiskSample`] per readable directory, in order; one error per other directory.
pub(crate) fn collect(dirs: &[PathBuf], sample: &mut HealthSample) {
    for dir in dirs {
        match read(dir) {
            Ok(disk) => sample.disks.push(disk),
            Err(e) => sample.errors.push(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn usage_table() {
        type Case<'a> = ((u64, u64, u64), Result<(u64, u64), &'a str>);
        let table: &[Case] = &[
            ((1000, 250, 4096), Ok((750 * 4096, 1000 * 4096))),
            ((1000, 1000, 4096), Ok((0, 1000 * 4096))),
            ((1000, 0, 512), Ok((1000 * 512, 1000 * 512))),
            ((0, 0, 4096), Ok((0, 0))),
            (
                (10, 11, 4096),
                Err("11 free blocks exceed the 10 blocks in total"),
            ),
            (
                (u64::MAX, 0, 2),
                Err("18446744073709551615 blocks of 2 bytes overflow"),
            ),
        ];
        for ((blocks, free, frsize), want) in table {
            assert_eq!(
                usage(*blocks, *free, *frsize),
                want.map_err(str::to_string),
                "{blocks} {free} {frsize}"
            );
        }
    }

    #[test]
    fn real_statvfs_of_a_tempdir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("segment.log"), vec![7u8; 1 << 20]).unwrap();
        let disk = read(dir.path()).unwrap();
        assert_eq!(disk.path, dir.path().display().to_string());
        assert!(disk.used_bytes > 0, "{disk:?}");
        assert!(disk.size_bytes > disk.used_bytes, "{disk:?}");
    }

    #[test]
    fn the_label_is_the_configured_path_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let configured = dir.path().join("sub/../.");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let disk = read(&configured).unwrap();
        assert_eq!(disk.path, configured.display().to_string());
    }

    #[test]
    fn a_missing_directory_is_an_error_for_that_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("kafka-logs-2");
        let mut sample = HealthSample::default();
        collect(&[missing.clone(), dir.path().to_path_buf()], &mut sample);
        assert_eq!(sample.disks.len(), 1);
        assert_eq!(sample.disks[0].path, dir.path().display().to_string());
        assert_eq!(
            sample.errors,
            vec![HealthError::Read {
                stage: Stage::Disk,
                path: missing.clone(),
                reason: "statvfs: No such file or directory".to_string(),
            }]
        );
        assert_eq!(
            sample.errors[0].to_string(),
            format!(
                "disk: cannot read {}: statvfs: No such file or directory",
                missing.display()
            )
        );
    }

    proptest! {
        #[test]
        fn usage_never_panics_and_used_never_exceeds_size(
            blocks in any::<u64>(), free in any::<u64>(), frsize in any::<u64>()
        ) {
            if let Ok((used, size)) = usage(blocks, free, frsize) {
                prop_assert!(used <= size);
            }
        }
    }
}
