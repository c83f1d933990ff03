//! The one YAML reader: configuration, pipeline, connector and mapping files
//! are all parsed here into a tree of positioned nodes, and raw structs are
//! read from that tree (a leaf below `config`, `connector` and `mapping`).
//!
//! - [`tree`]: [`Node`], [`Value`], [`Key`] and [`parse`].
//! - [`de`]: serde over a node: [`from_node`], [`parse_lenient`], [`Located`].
//! - [`error`]: what went wrong, and where.
//!
//! ```yaml
//! name: sandbox          # every key and value keeps its line and column
//! base_url: "waybill:/sandbox"
//! ```

pub mod de;
pub mod error;
pub mod tree;

pub use de::{Located, from_node, parse_lenient};
pub use error::{Error, quote_as_written};
pub use tree::{Key, Node, Seg, Value, parse};

use std::path::{Path, PathBuf};

/// Why a YAML file could not be turned into a tree.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read at all (missing, unreadable, not UTF-8):
    /// the caller reports it where the file was referenced.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML; the error is located in the file.
    #[error("invalid YAML: {0}")]
    Syntax(#[from] Error),
}

/// Reads and parses one YAML file.
pub fn read(path: &Path) -> Result<Node, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse(&text)?)
}
