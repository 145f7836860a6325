//! The live OpenAPI document says what the handlers do, in the form linters
//! and schema-driven clients expect (the full lint and schemathesis run is
//! scripts/openapi-conformance.sh, run by .ci/run).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn served() -> (tempfile::TempDir, backup_service::app::Running, Value) {
    let dir = temp_dir();
    let url = format!("{}?mode=rwc", sqlite_url(dir.path()));
    let server = start(&config(&url, &dir.path().join("backups"))).await;
    let doc: Value = reqwest::get(format!("http://{}/api/openapi.json", server.http_addr))
        .await
        .expect("openapi.json")
        .json()
        .await
        .expect("JSON");
    (dir, server, doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_has_servers_and_security_where_it_applies() {
    let (_dir, _server, doc) = served().await;
    assert!(
        doc["servers"].as_array().is_some_and(|s| !s.is_empty()),
        "{}",
        doc["servers"]
    );
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    for probe in ["/healthz", "/readyz"] {
        let security = &doc["paths"][probe]["get"]["security"];
        assert_eq!(security, &json!([{}]), "{probe} needs no token");
    }
    assert_eq!(
        doc["paths"]["/api/backup/list"]["get"]["security"],
        json!([{"bearer": []}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_is_a_binary_file_and_statuses_are_listed() {
    let (_dir, _server, doc) = served().await;
    let ok = &doc["paths"]["/api/backup/download/{backupId}"]["get"]["responses"]["200"];
    let binary = &ok["content"]["application/octet-stream"]["schema"];
    let binary = match binary.get("$ref").and_then(Value::as_str) {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().expect("ref")],
        None => binary,
    };
    assert_eq!(binary["type"], "string", "{ok}");
    assert_eq!(binary["format"], "binary", "{ok}");
    assert!(!ok.to_string().contains("\"array\""), "{ok}");

    let create = &doc["paths"]["/api/backup/create"]["post"];
    for status in ["201", "202", "400", "401", "403", "409", "413", "500"] {
        assert!(
            create["responses"].get(status).is_some(),
            "create lacks {status}"
        );
    }
    assert!(create["responses"]["201"]["content"]["application/json"]["example"].is_object());
    assert_eq!(create["requestBody"]["required"], false);
    let page_size = doc["paths"]["/api/backup/list"]["get"]["parameters"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "pageSize"))
        .expect("pageSize")
        .clone();
    assert_eq!(page_size["schema"]["maximum"], 1000, "{page_size}");
    assert_eq!(page_size["schema"]["minimum"], 0, "{page_size}");
}

/// What the document states is what the handlers enforce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stated_bounds_are_enforced() {
    let (_dir, server, _doc) = served().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.http_addr);
    let r = http
        .get(format!("{base}/api/backup/list?pageSize=1001"))
        .bearer_auth(token("ADMIN"))
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http
        .get(format!("{base}/api/backup/list?pageSize=1000"))
        .bearer_auth(token("ADMIN"))
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .post(format!("{base}/api/backup/create"))
        .bearer_auth(token("ADMIN"))
        .json(&json!([null, null]))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let list: Value = http
        .get(format!("{base}/api/backup/list"))
        .bearer_auth(token("ADMIN"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(list["total"], 0, "a refused body created nothing");
}
