// Generated from crates/cmem-wire/src/codes.rs: do not edit. A test fails when this file is
// out of date; `CMEM_WRITE_CODES=1 cargo test -p cmem-wire` writes it again.

/**
 * Every refusal and close code cmem sends: the HTTP status it comes with (null when only a
 * close or a resync says it), what a client should do (`retry`, `reauthenticate`, `resync`,
 * `give_up`), and what it means.
 */
export const CODES = Object.freeze({
  token_required: Object.freeze({ status: 401, action: 'reauthenticate', meaning: "This server has users and the request carried no token." }),
  token_invalid: Object.freeze({ status: 401, action: 'reauthenticate', meaning: "The token was not issued by this server, or its user was removed." }),
  token_revoked: Object.freeze({ status: 401, action: 'reauthenticate', meaning: "The token was revoked; the connections that presented it are closed with this code." }),
  user_removed: Object.freeze({ status: 401, action: 'reauthenticate', meaning: "The user was removed; their connections are closed with this code." }),
  authentication_required: Object.freeze({ status: 401, action: 'reauthenticate', meaning: "A connection opened while the server ran open (no users) is closed: the server has users now, so a token is needed." }),
  server_closed: Object.freeze({ status: 503, action: 'reauthenticate', meaning: "The server listens beyond loopback and has no users: it refuses everything until an admin creates a user and hands out a token." }),
  auth_unavailable: Object.freeze({ status: 503, action: 'retry', meaning: "The token could not be checked just now." }),
  forbidden: Object.freeze({ status: 403, action: 'give_up', meaning: "Not allowed: a workspace the user is not a member of, an admin's action, or an origin not in `cors_origins`. The message names which." }),
  invalid: Object.freeze({ status: 400, action: 'give_up', meaning: "The request is malformed or a value is out of range; the message names it." }),
  not_found: Object.freeze({ status: 404, action: 'give_up', meaning: "No such path, document, user, workspace or message." }),
  method_not_allowed: Object.freeze({ status: 405, action: 'give_up', meaning: "The path exists, not with this method." }),
  exists: Object.freeze({ status: 409, action: 'give_up', meaning: "It exists already (a user, a workspace, a document)." }),
  limit_reached: Object.freeze({ status: 409, action: 'give_up', meaning: "A count limit was reached (documents in a workspace, members, subscriptions)." }),
  conflict: Object.freeze({ status: 409, action: 'give_up', meaning: "It would leave a bad state (the last admin removed)." }),
  payload_too_large: Object.freeze({ status: 413, action: 'give_up', meaning: "The body is larger than `max_payload_bytes`." }),
  uri_too_long: Object.freeze({ status: 414, action: 'give_up', meaning: "The URL is longer than the server reads." }),
  unsupported_media_type: Object.freeze({ status: 415, action: 'give_up', meaning: "The body is not JSON (`Content-Type: application/json`)." }),
  not_available: Object.freeze({ status: 422, action: 'give_up', meaning: "Valid, but this server cannot answer it as configured (search by meaning on a build without the embedding model)." }),
  rate_limited: Object.freeze({ status: 429, action: 'retry', meaning: "Too many requests: wait (`Retry-After` when given), then send again." }),
  unavailable: Object.freeze({ status: 503, action: 'retry', meaning: "The server cannot take it now (the journal is unavailable, or it is at its connection limit): try again with backoff." }),
  internal: Object.freeze({ status: 500, action: 'retry', meaning: "The server failed (it is logged); trying again may succeed." }),
  server_shutdown: Object.freeze({ status: 503, action: 'retry', meaning: "The server is shutting down: reconnect (to another node, or once it is back) from the cursor." }),
  slow_consumer: Object.freeze({ status: null, action: 'retry', meaning: "The client accepted no data for `slow_consumer_timeout_ms`: reconnect from the cursor." }),
  journal_error: Object.freeze({ status: null, action: 'retry', meaning: "The journal failed while delivering: reconnect from the cursor." }),
  recovered_elsewhere: Object.freeze({ status: null, action: 'give_up', meaning: "A newer connection recovered this Socket.IO session: this one is redundant and must not reconnect." }),
  epoch_mismatch: Object.freeze({ status: null, action: 'resync', meaning: "The cursor belongs to another journal (the server's data was replaced or restored)." }),
  cursor_ahead_of_journal: Object.freeze({ status: null, action: 'resync', meaning: "The cursor is past the journal's last event (a journal restored from an older backup)." }),
  cursor_older_than_retention: Object.freeze({ status: null, action: 'resync', meaning: "Events after the cursor were pruned (retention): what happened in between cannot be replayed." }),
  unknown_session: Object.freeze({ status: null, action: 'resync', meaning: "The Socket.IO session the client presented is not one this server can vouch for (another server, another journal, or made up)." }),
});
