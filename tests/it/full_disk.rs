//! A real full disk under the embedded bus: webhooks answer 503, `/readyz`
//! says not ready and why, and both recover once space returns, with no
//! webhook needed to find out.
//!
//! It needs a filesystem it can fill: a small tmpfs, which only root can
//! mount. Elsewhere (and on the Kafka backend, whose bus is not on disk
//! here) it says so and passes without running.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A tmpfs of `size` mounted on a directory of its own, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// An order with `noise` bytes of incompressible text in its note.
fn noisy_order(i: usize, noise: usize) -> Vec<u8> {
    let text: String = (0..noise)
        .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
        .collect();
    order_with("order-cod.json", |o| {
        o["id"] = serde_json::json!(7_200_000_000_000_000_000u64 + i as u64);
        o["note"] = serde_json::json!(text);
    })
}

async fn readyz(app: &App) -> (u16, String) {
    let response = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_full_disk_makes_readyz_unready_until_space_returns() {
    if backend() != Backend::Embedded {
        eprintln!("skipped: the embedded bus is the one on this disk");
        return;
    }
    let Some(disk) = Tmpfs::mount("6m") else {
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    };
    let dir = ConfigDir::new("{ connector: sandbox }");
    let data: PathBuf = disk.path().join("data");
    dir.edit("waybill.yaml", |text| {
        text.replace(
            "data_dir: ./data",
            &format!("data_dir: \"{}\"", data.display()),
        )
    });
    let app = App::start(&dir).await;
    assert_eq!(readyz(&app).await.0, 200);
    // Most of the disk goes to a ballast file; orders fill the rest.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 4 * 1024 * 1024]).expect("ballast");
    let mut refused = None;
    for i in 0..200 {
        let (status, _) = app
            .shopify(
                &noisy_order(i, 48 * 1024),
                "orders/paid",
                &format!("fill-{i}"),
            )
            .await;
        if status == 503 {
            refused = Some(i);
            break;
        }
        assert_eq!(status, 200, "order {i}");
    }
    assert!(refused.is_some(), "the disk filled up");
    let (status, text) = readyz(&app).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("full"), "{text}");
    std::fs::remove_file(&ballast).expect("free the space");
    eventually(Duration::from_secs(10), "/readyz ready again", || async {
        (readyz(&app).await.0 == 200).then_some(())
    })
    .await;
    let (status, _) = app
        .shopify(&noisy_order(999, 16), "orders/paid", "after")
        .await;
    assert_eq!(status, 200);
    app.stop().await;
    drop(dir);
    drop(disk);
}
