use crate::support::*;

#[tokio::test]
async fn connect_open_channel_and_close() {
    let b = TestBroker::start().await;
    let (conn, ch) = b.channel().await;
    assert!(ch.status().connected());
    ch.close(200, ss("bye")).await.unwrap();
    conn.close(200, ss("bye")).await.unwrap();
    b.broker.shutdown().await;
}

#[tokio::test]
async fn wrong_password_is_access_refused() {
    let b = TestBroker::start().await;
    let err = Connection::connect(
        &b.uri_for("guest", "nope", "/"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(403), "{err:?}");
    // the broker stays up
    let _ok = b.connect().await;
}

#[tokio::test]
async fn unknown_vhost_is_not_allowed() {
    let b = TestBroker::start().await;
    let err = Connection::connect(
        &b.uri_for("guest", "guest", "nope"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(530), "{err:?}");
}

#[tokio::test]
async fn many_channels() {
    let b = TestBroker::start().await;
    let conn = b.connect().await;
    let mut chans = Vec::new();
    for _ in 0..50 {
        chans.push(conn.create_channel().await.unwrap());
    }
    for ch in &chans {
        declare(ch, "").await;
    }
}

#[tokio::test]
async fn shutdown_closes_clients_with_320() {
    let b = TestBroker::start().await;
    let conn = b.connect().await;
    let ch = conn.create_channel().await.unwrap();
    b.broker.shutdown().await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!conn.status().connected());
    assert!(ch
        .queue_declare(
            ss("x"),
            QueueDeclareOptions::default(),
            FieldTable::default()
        )
        .await
        .is_err());
}

/// guest may only connect from loopback; other users may connect from anywhere.
#[tokio::test]
async fn guest_is_loopback_only() {
    // find a non-loopback local address, if the machine has one
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let ip = match probe
        .connect("192.0.2.1:9")
        .and_then(|_| probe.local_addr())
    {
        Ok(a) if !a.ip().is_loopback() && !a.ip().is_unspecified() => a.ip(),
        _ => return eprintln!("no non-loopback address; skipping"),
    };
    let b = TestBroker::start_with(|c| c.amqp_listen = "0.0.0.0:0".parse().unwrap()).await;
    b.broker.admin().add_user("remote", "pw", &[]).unwrap();
    b.broker
        .admin()
        .set_permissions("remote", "/", ".*", ".*", ".*")
        .unwrap();
    let port = b.broker.amqp_addr().port();
    let err = Connection::connect(
        &format!("amqp://guest:guest@{ip}:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(403), "{err:?}");
    let ok = Connection::connect(
        &format!("amqp://remote:pw@{ip}:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    ok.create_channel().await.unwrap();
    // and guest from loopback is fine
    let _c = Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
}

/// The admin CLI edits the data directory; the broker picks the changes up at start.
#[tokio::test]
async fn admin_cli_adds_user() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_eventbus-broker");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["admin", "add-vhost", "apps"]);
    run(&["admin", "add-user", "dave", "pw", "--tags", "management"]);
    run(&[
        "admin",
        "set-permissions",
        "-p",
        "apps",
        "dave",
        ".*",
        ".*",
        ".*",
    ]);
    assert!(run(&["admin", "list-users"]).contains("dave"));
    assert!(run(&["admin", "list-vhosts"]).contains("apps"));
    let config = eventbus_broker::Config {
        amqp_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let broker = eventbus_broker::Broker::start(config).await.unwrap();
    let c = Connection::connect(
        &format!("amqp://dave:pw@{}/apps", broker.amqp_addr()),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    c.create_channel().await.unwrap();
}

/// The binary reads a TOML config, serves, and exits cleanly on SIGTERM after closing clients.
#[cfg(unix)]
#[tokio::test]
async fn binary_config_file_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.path().join("broker.toml");
    std::fs::write(
        &cfg,
        format!(
            "amqp_listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nchannel_max = 16\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eventbus-broker"))
        .arg("--config")
        .arg(&cfg)
        .env("EVENTBUS_BROKER_LOG", "warn")
        .spawn()
        .unwrap();
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let mut conn = None;
    for _ in 0..100 {
        if let Ok(c) = Connection::connect(&uri, ConnectionProperties::default()).await {
            conn = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let conn = conn.expect("binary did not start");
    assert_eq!(conn.configuration().channel_max(), 16);
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(!conn.status().connected());
    assert!(dir.path().join("data").join("definitions.json").exists());
}
