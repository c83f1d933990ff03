pub async fn run(_: &std::path::Path, _: DlqCommand) -> anyhow::Result<i32> { todo!() }
#[derive(Debug, clap::Subcommand)] pub enum DlqCommand { List }
