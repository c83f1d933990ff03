//! `waybill dlq`: list, show and replay dead letters (DESIGN §10).
//!
//! A dead letter's id is `TOPIC:PARTITION:OFFSET`, e.g. `dlq.shopify-orders:0:3`.
//!
//! ```sh
//! waybill dlq list
//! waybill dlq show dlq.shopify-orders:0:3
//! waybill dlq replay dlq.shopify-orders:0:3      # or --pipeline shopify-orders
//! ```

use crate::bus::Bus;
use crate::bus::dead_letter::{self, DeadLetter};
use crate::config::Config;
use crate::model::{Message, Record, header};
use anyhow::Context;
use serde_json::{Value, json};

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter: id, pipeline, class, key, order name, message.
    List {
        /// Only this pipeline's dead letters.
        #[arg(long)]
        pipeline: Option<String>,
    },
    /// Everything about one dead letter, as JSON.
    Show { id: String },
    /// Re-enqueue onto the pipeline's input (after fixing a mapping or table).
    Replay {
        /// A dead letter id.
        #[arg(conflicts_with = "pipeline", required_unless_present = "pipeline")]
        id: Option<String>,
        /// Every dead letter of this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
    },
}

/// Reads a whole topic, page by page.
async fn read_all(bus: &dyn Bus, topic: &str) -> anyhow::Result<Vec<Record>> {
    const PAGE: usize = 1000;
    let mut all: Vec<Record> = Vec::new();
    let mut from = 0;
    loop {
        let page = bus.read(topic, from, PAGE).await?;
        let Some(last) = page.iter().map(|r| r.offset).max() else {
            break;
        };
        let full = page.len() == PAGE;
        all.extend(page);
        if !full {
            break;
        }
        from = last + 1;
    }
    Ok(all)
}

fn id_of(record: &Record) -> String {
    format!("{}:{}:{}", record.topic, record.partition, record.offset)
}

fn parse_id(id: &str) -> anyhow::Result<(String, i32, i64)> {
    let bad = || {
        anyhow::anyhow!(
            "dead letter id `{id}` is not TOPIC:PARTITION:OFFSET (as `waybill dlq list` prints)"
        )
    };
    let (rest, offset) = id.rsplit_once(':').ok_or_else(bad)?;
    let (topic, partition) = rest.rsplit_once(':').ok_or_else(bad)?;
    Ok((
        topic.to_string(),
        partition.parse().map_err(|_| bad())?,
        offset.parse().map_err(|_| bad())?,
    ))
}

fn dead_letter_topics(
    config: &Config,
    pipeline: Option<&str>,
) -> anyhow::Result<Vec<(String, String)>> {
    let chosen: Vec<(String, String)> = config
        .pipelines
        .iter()
        .filter(|p| pipeline.is_none_or(|name| p.name == name))
        .map(|p| (p.name.clone(), p.dead_letter.clone()))
        .collect();
    if chosen.is_empty()
        && let Some(name) = pipeline
    {
        anyhow::bail!("no pipeline named `{name}`");
    }
    Ok(chosen)
}

async fn find(bus: &dyn Bus, id: &str) -> anyhow::Result<Record> {
    let (topic, partition, offset) = parse_id(id)?;
    bus.read(&topic, offset, 64)
        .await?
        .into_iter()
        .find(|r| r.partition == partition && r.offset == offset)
        .with_context(|| format!("no dead letter {id}"))
}

/// The original message, without the dead-letter headers, under a new id.
fn original(record: &Record) -> Message {
    let mut headers = record.message.headers.clone();
    headers.retain(|name, _| {
        !(name.starts_with("waybill-error-")
            || name.starts_with("waybill-origin-")
            || [
                header::PIPELINE,
                header::ATTEMPTS,
                header::FIRST_FAILED_AT,
                header::LAST_FAILED_AT,
            ]
            .contains(&name.as_str()))
    });
    headers.insert(header::ID.into(), uuid::Uuid::new_v4().to_string());
    Message {
        key: record.message.key.clone(),
        headers,
        payload: record.message.payload.clone(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs one `waybill dlq` command on backends the caller opened and closes.
pub async fn run(
    config: &crate::config::Config,
    backends: &crate::runtime::Backends,
    command: DlqCommand,
) -> anyhow::Result<i32> {
    let bus = backends.bus.as_ref();
    match command {
        DlqCommand::List { pipeline } => {
            for (name, topic) in dead_letter_topics(config, pipeline.as_deref())? {
                for record in read_all(bus, &topic).await? {
                    let d: DeadLetter = dead_letter::describe(&record);
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        id_of(&record),
                        d.pipeline.as_deref().unwrap_or(&name),
                        d.class.map(|c| c.as_str()).unwrap_or("-"),
                        d.key,
                        d.order_name.as_deref().unwrap_or("-"),
                        one_line(d.message.as_deref().unwrap_or("")),
                    );
                }
            }
            Ok(0)
        }
        DlqCommand::Show { id } => {
            let record = find(bus, &id).await?;
            let d = dead_letter::describe(&record);
            let payload =
                serde_json::from_slice::<Value>(&record.message.payload).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&record.message.payload).into_owned())
                });
            let out = json!({
                "id": id_of(&record),
                "pipeline": d.pipeline,
                "stage": d.stage,
                "class": d.class.map(|c| c.as_str()),
                "message": d.message,
                "attempts": d.attempts,
                "first_failed_at": d.first_failed_at,
                "last_failed_at": d.last_failed_at,
                "origin": d.origin.map(|o| json!({ "topic": o.topic, "partition": o.partition, "offset": o.offset })),
                "key": d.key,
                "order_name": d.order_name,
                "request": d.request,
                "response": d.response,
                "headers": record.message.headers,
                "payload": payload,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        DlqCommand::Replay { id, pipeline } => {
            let records = match (id, pipeline) {
                (Some(id), _) => vec![find(bus, &id).await?],
                (None, Some(name)) => {
                    let mut all = Vec::new();
                    for (_, topic) in dead_letter_topics(config, Some(&name))? {
                        all.extend(read_all(bus, &topic).await?);
                    }
                    all
                }
                (None, None) => anyhow::bail!("give a dead letter id or --pipeline"),
            };
            for record in &records {
                let d = dead_letter::describe(record);
                let target = match d.origin {
                    Some(origin) => origin.topic,
                    None => d
                        .pipeline
                        .as_deref()
                        .and_then(|p| config.pipelines.iter().find(|x| x.name == p))
                        .map(|p| p.input.clone())
                        .with_context(|| {
                            format!(
                                "dead letter {} names no origin topic or known pipeline",
                                id_of(record)
                            )
                        })?,
                };
                let offset = bus.publish(&target, original(record)).await?;
                println!(
                    "replayed {} onto {target} at offset {offset}",
                    id_of(record)
                );
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_with_dots_and_colons_in_topics() {
        assert_eq!(
            parse_id("dlq.shopify-orders:0:3").unwrap(),
            ("dlq.shopify-orders".into(), 0, 3)
        );
        assert_eq!(parse_id("a:b:1:2").unwrap(), ("a:b".into(), 1, 2));
        assert!(parse_id("dlq.x:3").is_err());
        assert!(parse_id("dlq.x:a:3").is_err());
    }
}
