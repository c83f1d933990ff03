//! `waybill run`: start the HTTP server and every pipeline on the configured
//! bus and store; stop cleanly on SIGTERM or ctrl-c.

use std::path::Path;

pub async fn run(config_path: &Path) -> anyhow::Result<i32> {
    let config = super::load_config(config_path)?;
    let listener = crate::runtime::bind(&config).await?;
    crate::runtime::run(config, listener, crate::runtime::shutdown_signal()).await?;
    Ok(0)
}
