//! `GET /api/v1/jobs`: newest first, cursor pagination that visits every job once, the
//! status filter, and refusals of bad parameters.

use freight_tests::{TestApp, inline_job};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::intake_support::{error_fields, expect_problem, upload_job};

/// `GET path` as a tenant, asserting 200 and the page shape.
async fn page(app: &TestApp, key: &str, path: &str) -> (Vec<String>, Option<String>) {
    let res = app.tenant(key, Method::GET, path).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    let body: Value = res.json().await.unwrap();
    let data = body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no `data`: {body}"));
    assert!(
        body.get("next_cursor").is_some(),
        "{path}: `next_cursor` must be present, even when null: {body}"
    );
    let ids = data
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, body["next_cursor"].as_str().map(str::to_owned))
}

/// Follows `next_cursor` from `first` to the end; returns every page's ids.
async fn walk(app: &TestApp, key: &str, first: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut path = first.to_owned();
    loop {
        let (ids, next) = page(app, key, &path).await;
        pages.push(ids);
        assert!(pages.len() <= 50, "pagination does not end");
        match next {
            Some(cursor) => {
                let sep = if first.contains('?') { '&' } else { '?' };
                path = format!("{first}{sep}cursor={cursor}");
            }
            None => return pages,
        }
    }
}

/// Creates five jobs, alternating inline and upload; returns their ids in creation order
/// and which were uploads.
async fn five_jobs(app: &TestApp, key: &str) -> Vec<(String, bool)> {
    let mut created = Vec::new();
    for i in 0..5 {
        let upload = i % 2 == 1;
        let body = if upload {
            upload_job(10, None)
        } else {
            inline_job(2)
        };
        let job = app.create_job(key, &body).await;
        created.push((job["id"].as_str().unwrap().to_owned(), upload));
    }
    created
}

#[tokio::test]
async fn walking_the_cursor_visits_every_job_once_newest_first() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let created = five_jobs(&app, &key).await;
    let newest_first: Vec<String> = created.iter().rev().map(|(id, _)| id.clone()).collect();

    let pages = walk(&app, &key, "/api/v1/jobs?limit=2").await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 1],
        "{pages:?}"
    );
    assert_eq!(pages.concat(), newest_first);

    // Without a limit, everything fits on one page; an exact fit has no next page.
    assert_eq!(
        page(&app, &key, "/api/v1/jobs").await,
        (newest_first.clone(), None)
    );
    assert_eq!(
        page(&app, &key, "/api/v1/jobs?limit=5").await,
        (newest_first.clone(), None)
    );
    let pages = walk(&app, &key, "/api/v1/jobs?limit=4").await;
    assert_eq!(
        pages,
        [newest_first[..4].to_vec(), newest_first[4..].to_vec()]
    );
    assert_eq!(
        walk(&app, &key, "/api/v1/jobs?limit=1").await.concat(),
        newest_first
    );
    assert_eq!(
        page(&app, &key, "/api/v1/jobs?limit=1000").await.0,
        newest_first
    );

    // A job created after a page was read appears at the front, not in the pages after it.
    let (first_page, cursor) = page(&app, &key, "/api/v1/jobs?limit=2").await;
    let newer = app.create_job(&key, &inline_job(1)).await;
    let (rest, _) = page(
        &app,
        &key,
        &format!("/api/v1/jobs?limit=100&cursor={}", cursor.unwrap()),
    )
    .await;
    assert_eq!([first_page, rest].concat(), newest_first);
    assert_eq!(
        page(&app, &key, "/api/v1/jobs?limit=1").await.0,
        [newer["id"].as_str().unwrap()]
    );
}

#[tokio::test]
async fn the_status_filter_returns_only_that_state() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let created = five_jobs(&app, &key).await;
    let uploads: Vec<String> = created
        .iter()
        .rev()
        .filter(|(_, u)| *u)
        .map(|(id, _)| id.clone())
        .collect();
    let inline: Vec<String> = created
        .iter()
        .rev()
        .filter(|(_, u)| !*u)
        .map(|(id, _)| id.clone())
        .collect();

    // Upload jobs wait for their records.
    assert_eq!(
        page(&app, &key, "/api/v1/jobs?status=awaiting_upload").await,
        (uploads.clone(), None)
    );
    let res = app
        .tenant(&key, Method::GET, "/api/v1/jobs?status=awaiting_upload")
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "awaiting_upload"),
        "{body}"
    );

    // Inline jobs were queued (and admitted to `running` if the tenant had a free slot):
    // filtering by the state they are in returns exactly them, across pages too.
    let res = app
        .tenant(&key, Method::GET, "/api/v1/jobs")
        .send()
        .await
        .unwrap();
    let all: Value = res.json().await.unwrap();
    let status_of = |id: &str| -> String {
        let job = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .unwrap();
        job["status"].as_str().unwrap().to_owned()
    };
    let inline_status = status_of(&inline[0]);
    assert!(
        ["queued", "running"].contains(&inline_status.as_str()),
        "{all}"
    );
    assert!(
        inline.iter().all(|id| status_of(id) == inline_status),
        "{all}"
    );
    assert_eq!(
        page(&app, &key, &format!("/api/v1/jobs?status={inline_status}")).await,
        (inline.clone(), None)
    );
    assert_eq!(
        walk(
            &app,
            &key,
            &format!("/api/v1/jobs?status={inline_status}&limit=1")
        )
        .await,
        inline.iter().map(|id| vec![id.clone()]).collect::<Vec<_>>()
    );
    // A state no job is in.
    assert_eq!(
        page(&app, &key, "/api/v1/jobs?status=completed").await,
        (vec![], None)
    );
}

#[tokio::test]
async fn bad_list_parameters_are_refused() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_with_key("acme").await;
    app.create_job(&key, &inline_job(1)).await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("status=bogus", "status"),
    ] {
        let res = app
            .tenant(&key, Method::GET, &format!("/api/v1/jobs?{query}"))
            .send()
            .await
            .unwrap();
        let problem = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, query).await;
        assert_eq!(error_fields(&problem), [field], "{query}: {problem}");
    }
    for query in [
        "limit=abc",
        "limit=1.5",
        "limit=99999999999999999999",
        "cursor=garbage!!",
        "cursor=AAAA",
        "cursor=bm90LWEtdXVpZC1hdC1hbGwtaGVyZQ",
    ] {
        let res = app
            .tenant(&key, Method::GET, &format!("/api/v1/jobs?{query}"))
            .send()
            .await
            .unwrap();
        expect_problem(res, StatusCode::BAD_REQUEST, query).await;
    }
}
