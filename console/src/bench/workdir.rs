//! The temporary directory a bench works in: made under `--dir` (else the
//! system temp dir) with a recognisable prefix, and removed at the end
//! unless `--keep` asks to keep it, in which case it outlives even a failed
//! run, for inspection.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::TempDir;

#[derive(Debug)]
pub(crate) struct WorkDir {
    path: PathBuf,
    /// `None` when kept.
    temp: Option<TempDir>,
}

impl WorkDir {
    pub(crate) fn create(prefix: &str, under: Option<&Path>, keep: bool) -> Result<WorkDir> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix);
        let temp = match under {
            Some(dir) => builder.tempdir_in(dir),
            None => builder.tempdir(),
        }
        .context("cannot create the bench directory")?;
        Ok(if keep {
            WorkDir {
                path: temp.keep(),
                temp: None,
            }
        } else {
            WorkDir {
                path: temp.path().to_path_buf(),
                temp: Some(temp),
            }
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory, or says where it was kept.
    pub(crate) fn finish(self) -> Result<()> {
        match self.temp {
            Some(temp) => temp.close().context("cannot remove the bench directory"),
            None => {
                eprintln!("kept the bench data in {}", self.path.display());
                Ok(())
            }
        }
    }
}
