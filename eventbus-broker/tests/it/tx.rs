use crate::support::*;

#[tokio::test]
async fn commit_and_rollback_publishes() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "txq").await;
    ch.tx_select().await.unwrap();
    publish(&ch, "", &q, b"rolled-back").await;
    ch.tx_rollback().await.unwrap();
    publish(&ch, "", &q, b"committed").await;
    let (_c2, other) = b.channel().await;
    assert_eq!(
        get(&other, &q).await,
        None,
        "uncommitted publish must be invisible"
    );
    ch.tx_commit().await.unwrap();
    assert_eq!(drain(&other, &q).await, vec!["committed"]);
}

#[tokio::test]
async fn acks_are_transactional() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "txack").await;
    publish(&ch, "", &q, b"m").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    ch.tx_select().await.unwrap();
    let m = ch
        .basic_get(ss(&q), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    ch.tx_rollback().await.unwrap();
    // rolled back ack: message still unacked; closing the channel requeues it
    ch.close(200, ss("bye")).await.unwrap();
    let (_c2, ch2) = b.channel().await;
    assert_eq!(drain(&ch2, &q).await, vec!["m"]);
}

#[tokio::test]
async fn commit_without_select_is_406() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let err = ch.tx_commit().await.unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
}

#[tokio::test]
async fn confirm_and_tx_are_exclusive() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let err = ch.tx_select().await.unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
}
