//! Property tests over every parser a client can reach (the same entry points the cargo-fuzz
//! targets in `fuzz/` drive): random and structured input must never panic, overflow or hang,
//! and what is accepted must keep the parser's promise. `CMEM_PROPTEST_CASES=100000 cargo test
//! --test fuzz_props` runs them longer than the default.

use cmem::fuzzing;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("CMEM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// JSON text built from pieces the parsers care about, nested at random.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("1e400".to_string()),
        Just("-0.5".to_string()),
        "[a-z_:.\\-]{0,12}".prop_map(|s| format!("{s:?}")),
        "\\PC{0,20}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        prop_oneof![
            Just("global"),
            Just("workspace:eng"),
            Just("client:x"),
            Just("team_message"),
            Just("resync"),
            Just("AQID"),
            Just("7"),
            Just("e1:7"),
        ]
        .prop_map(|s| format!("{s:?}")),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        let key = prop_oneof![
            Just("type"),
            Just("scope"),
            Just("data"),
            Just("events"),
            Just("last_event_id"),
            Just("epoch"),
            Just("workspaces"),
            Just("token"),
            Just("workspace"),
            Just("doc"),
            Just("update"),
            Just("state_vector"),
            Just("text"),
            Just("bogus"),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key, inner), 0..6).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn search_queries(q in "([()\"'\\\\:+\\-*^~\\[\\]{} ]|NOT |AND |OR |TO |alpha|beta|title:|body:|path:|[0-9]|\\PC){0,300}") {
        fuzzing::search_query(&q);
    }

    #[test]
    fn publish_bodies(body in json_text()) {
        fuzzing::publish_body(body.as_bytes());
    }

    #[test]
    fn publish_bytes(body in prop::collection::vec(any::<u8>(), 0..200)) {
        fuzzing::publish_body(&body);
    }

    #[test]
    fn cursors(s in "([0-9]{0,25}|[a-f0-9]{0,20}:|:|-|\\PC){0,6}") {
        fuzzing::cursor(&s);
    }

    #[test]
    fn mcp_inputs(s in "(cmem://doc/|%[0-9A-Fa-f]{0,2}|\\.\\.|/|[a-z.]{0,6}|[0-9]{0,20}[mhdw]?|[-+:TZ]|\\{\"(query|path|limit|start_line|types)\":|\\}|\\[|\\]|,|\"|\\PC){0,12}") {
        fuzzing::mcp_input(&s);
    }

    #[test]
    fn query_strings(s in "((client_id|after|epoch|wait|limit|workspaces|token|_|x)=([a-z0-9:,.%+ ]|%[0-9A-F]{2}|\\PC){0,12}&?){0,8}") {
        fuzzing::query_string(&s);
    }

    #[test]
    fn socketio_auth(body in json_text()) {
        fuzzing::socketio_auth(body.as_bytes());
    }

    #[test]
    fn yjs_updates(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::yjs(&bytes);
    }

    #[test]
    fn client_payloads(body in json_text()) {
        fuzzing::client_payload(body.as_bytes());
    }

    #[test]
    fn socketio_wire(
        packets in prop::collection::vec(
            (
                prop_oneof![Just("4"), Just("2"), Just("3"), Just("b"), Just("6"), Just("5"), Just("0"), Just("1"), Just("x"), Just("")],
                prop_oneof![Just(""), Just("0"), Just("1"), Just("2"), Just("3"), Just("4"), Just("5"), Just("6"), Just("9")],
                prop_oneof![Just(""), Just("1-"), Just("2-"), Just("9-"), Just("99999999999999999999-"), Just("-")],
                prop_oneof![Just(""), Just("/"), Just("/,"), Just("/admin,"), Just("/a")],
                prop_oneof![Just(String::new()), "[0-9]{1,22}"],
                prop_oneof![
                    json_text(),
                    Just("[\"doc_update\",{\"_placeholder\":true,\"num\":0}]".to_string()),
                    Just("[\"connect\"]".to_string()),
                    Just("AQID".to_string()),
                ],
            ),
            0..6,
        )
    ) {
        let body: Vec<String> = packets
            .into_iter()
            .map(|(eio, sio, att, nsp, id, json)| format!("{eio}{sio}{att}{nsp}{id}{json}"))
            .collect();
        fuzzing::protocol(body.join("\u{1e}").as_bytes());
    }

    #[test]
    fn socketio_wire_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        fuzzing::protocol(&bytes);
    }

    #[test]
    fn websocket_frame_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::websocket_frames(&bytes);
    }

    #[test]
    fn websocket_masked_frames(
        split in any::<u8>(),
        frames in prop::collection::vec(
            (any::<bool>(), prop::sample::select(vec![0u8, 1, 2, 8, 9, 10, 3]), any::<[u8; 4]>(), prop::collection::vec(any::<u8>(), 0..300)),
            0..5,
        )
    ) {
        // well-formed headers around random payloads, so the decoder gets past the header
        let mut bytes = vec![split];
        for (fin, op, mask, payload) in frames {
            cmem_wire::ws::encode_client(fin, op, &payload, mask, &mut bytes);
        }
        fuzzing::websocket_frames(&bytes);
    }

    #[test]
    fn config_files(text in "((bind|ping_interval_ms|transports|cors_origins|queue_bound|data_dir|x) = (\"[^\"\n]{0,20}\"|[0-9]{1,12}|\\[\"a\", ?\"b\"\\]|true|\\{\\}|\\[\\[|)\n|\\[[a-z]{0,5}\\]\n|\\PC{0,10}\n){0,8}") {
        fuzzing::config_file(&text);
    }
}

/// Inputs deep enough to overflow a recursive parser, for each entry point that parses nested
/// data: all must come back (refused or parsed), not abort the process.
#[test]
fn deep_nesting_everywhere() {
    let deep_json = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep_obj = |n: usize| format!("{}1{}", "{\"data\":".repeat(n), "}".repeat(n));
    for n in [100, 1000, 100_000] {
        fuzzing::publish_body(deep_json(n).as_bytes());
        fuzzing::publish_body(format!("{{\"type\":\"x\",\"data\":{}}}", deep_obj(n)).as_bytes());
        fuzzing::socketio_auth(deep_json(n).as_bytes());
        fuzzing::client_payload(deep_json(n).as_bytes());
        fuzzing::config_file(&format!("x = {}", deep_json(n)));
        fuzzing::config_file(&format!("{}\n", "[a.".repeat(n.min(5000))));
        fuzzing::search_query(&"(".repeat(n.min(5000)));
        fuzzing::yjs(&vec![0xff; n.min(10_000)]);
        // a real update whose one Any value is an array nested n deep (yrs decodes, encodes
        // and drops it recursively): refused before decoding
        let mut deep = vec![1u8, 1, 1, 0, 8, 1, 1, b'a', 1];
        for _ in 0..n {
            deep.extend([117u8, 1]);
        }
        deep.extend([126u8, 0]);
        fuzzing::yjs(&deep);
    }
}
