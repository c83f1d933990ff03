//! `waybill dlq`: list, show and replay dead letters (DESIGN §10).
//!
//! A dead letter's id is `TOPIC:PARTITION:OFFSET`, e.g. `dlq.shopify-orders:0:3`.
//! A replay appends a marker naming the letter to its dead-letter topic
//! (see [`dead_letter::REPLAYED`]); `list` shows a replayed letter as such,
//! and `replay --pipeline` leaves it alone.
//!
//! ```sh
//! waybill dlq list
//! waybill dlq show dlq.shopify-orders:0:3
//! waybill dlq replay dlq.shopify-orders:0:3      # or --pipeline shopify-orders
//! ```

use super::output;
use crate::bus::dead_letter::{self, DeadLetter};
use crate::bus::{Bus, TopicOffset};
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

/// Records asked for per read.
const PAGE: usize = 1000;

/// A dead letter as `waybill dlq list` shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// `TOPIC:PARTITION:OFFSET`.
    pub id: String,
    pub record: Record,
    pub letter: DeadLetter,
    /// Whether a replay marker names it.
    pub replayed: bool,
}

/// Reads every partition of a topic to its end, `page` records per read.
async fn read_all(bus: &dyn Bus, topic: &str, page: usize) -> anyhow::Result<Vec<Record>> {
    let mut all: Vec<Record> = Vec::new();
    for partition in bus.partitions(topic).await? {
        let mut from = 0;
        loop {
            let at = TopicOffset {
                topic,
                partition,
                offset: from,
            };
            let got = bus.read_partition(at, page).await?;
            let Some(last) = got.last().map(|r| r.offset) else {
                break;
            };
            all.extend(got);
            from = last + 1;
        }
    }
    Ok(all)
}

/// Every dead letter of `topic`, reading `page` records at a time, with
/// replay markers folded into the letters they name.
pub async fn letters(bus: &dyn Bus, topic: &str, page: usize) -> anyhow::Result<Vec<Listed>> {
    let records = read_all(bus, topic, page).await?;
    let replayed: std::collections::HashSet<(i32, i64)> =
        records.iter().filter_map(dead_letter::replayed).collect();
    Ok(records
        .into_iter()
        .filter(|record| dead_letter::replayed(record).is_none())
        .map(|record| Listed {
            id: id_of(&record),
            letter: dead_letter::describe(&record),
            replayed: replayed.contains(&(record.partition, record.offset)),
            record,
        })
        .collect())
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
    let tracking = (
        crate::runtime::tracker::NAME.to_string(),
        crate::runtime::tracker::DEAD_LETTER_TOPIC.to_string(),
    );
    let chosen: Vec<(String, String)> = config
        .pipelines
        .iter()
        .map(|p| (p.name.clone(), p.dead_letter.clone()))
        .chain(std::iter::once(tracking))
        .filter(|(name, _)| pipeline.is_none_or(|wanted| name == wanted))
        .collect();
    if chosen.is_empty()
        && let Some(name) = pipeline
    {
        anyhow::bail!("no pipeline named `{name}`");
    }
    Ok(chosen)
}

/// The dead letter `id` names.
pub async fn find(bus: &dyn Bus, id: &str) -> anyhow::Result<Record> {
    let (topic, partition, offset) = parse_id(id)?;
    let at = TopicOffset {
        topic: &topic,
        partition,
        offset,
    };
    bus.read_partition(at, 1)
        .await?
        .into_iter()
        .find(|r| r.offset == offset && dead_letter::replayed(r).is_none())
        .with_context(|| format!("no dead letter {id}"))
}

/// The original message, without the dead-letter headers, under a new id
/// that names the old one.
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
    if let Some(id) = record.message.headers.get(header::ID) {
        headers.insert(header::REPLAY_OF.into(), id.clone());
    }
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
                for listed in letters(bus, &topic, PAGE).await? {
                    output::line(&list_line(&name, &listed))?;
                }
            }
        }
        DlqCommand::Show { id } => {
            output::line(&serde_json::to_string_pretty(&show(bus, &id).await?)?)?;
        }
        DlqCommand::Replay { id, pipeline } => {
            for line in replay(config, bus, id.as_deref(), pipeline.as_deref()).await? {
                output::line(&output::escape(&line))?;
            }
        }
    }
    Ok(0)
}

/// One line of `waybill dlq list`: id, pipeline, class, key, order name,
/// message, and `replayed` once the letter was replayed (else `-`).
fn list_line(pipeline: &str, listed: &Listed) -> String {
    let d = &listed.letter;
    let message = one_line(d.message.as_deref().unwrap_or(""));
    output::record([
        listed.id.as_str(),
        d.pipeline.as_deref().unwrap_or(pipeline),
        d.class.map(|c| c.as_str()).unwrap_or("-"),
        d.key.as_str(),
        d.order_name.as_deref().unwrap_or("-"),
        message.as_str(),
        if listed.replayed { "replayed" } else { "-" },
    ])
}

/// Everything about the dead letter `id`, as `waybill dlq show` prints it.
pub async fn show(bus: &dyn Bus, id: &str) -> anyhow::Result<Value> {
    let record = find(bus, id).await?;
    let replayed = letters(bus, &record.topic, PAGE)
        .await?
        .iter()
        .any(|listed| listed.replayed && listed.id == id_of(&record));
    let d = dead_letter::describe(&record);
    let payload = serde_json::from_slice::<Value>(&record.message.payload).unwrap_or_else(|_| {
        Value::String(String::from_utf8_lossy(&record.message.payload).into_owned())
    });
    Ok(json!({
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
        "replayed": replayed,
        "headers": record.message.headers,
        "payload": payload,
    }))
}

/// Re-enqueues the dead letter `id`, or every letter of `pipeline` not
/// replayed yet, onto its origin topic, and marks each replayed. Answers a
/// line per letter.
pub async fn replay(
    config: &Config,
    bus: &dyn Bus,
    id: Option<&str>,
    pipeline: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let records = match (id, pipeline) {
        (Some(id), _) => vec![find(bus, id).await?],
        (None, Some(name)) => {
            let mut all = Vec::new();
            for (_, topic) in dead_letter_topics(config, Some(name))? {
                let waiting = letters(bus, &topic, PAGE).await?.into_iter();
                all.extend(waiting.filter(|l| !l.replayed).map(|l| l.record));
            }
            all
        }
        (None, None) => anyhow::bail!("give a dead letter id or --pipeline"),
    };
    let mut lines = Vec::with_capacity(records.len());
    for record in &records {
        let target = origin_topic(config, record)?;
        let offset = bus.publish(&target, original(record)).await?;
        bus.publish(&record.topic, dead_letter::replay_marker(record))
            .await
            .with_context(|| format!("{} was replayed but not marked", id_of(record)))?;
        lines.push(format!(
            "replayed {} onto {target} at offset {offset}",
            id_of(record)
        ));
    }
    Ok(lines)
}

/// Where a dead letter goes back to: its origin topic, or else its
/// pipeline's input.
fn origin_topic(config: &Config, record: &Record) -> anyhow::Result<String> {
    let d = dead_letter::describe(record);
    match d.origin {
        Some(origin) => Ok(origin.topic),
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
            }),
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
