// The shared-document editor of the web app: a CodeMirror 6 editor bound to a Yjs document,
// kept in step with the server through the client library (doc_sync on every (re)connection,
// doc_update both ways). Bundled with its npm packages into /app/docs.js by build.mjs; the app
// imports it only when the Documents page opens, so the first page stays light.
import * as Y from 'yjs';
import { EditorView, minimalSetup } from 'codemirror';
import { lineNumbers, highlightActiveLine } from '@codemirror/view';
import { yCollab } from 'y-codemirror.next';

export const available = true;

function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
const fromBase64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

/**
 * Mounts the editor for document `doc` of `workspace` in `parent`; `onStatus(text, tone)`
 * reports saving state. Returns a function that unmounts it.
 */
export function mount(parent, { client, workspace, doc, onStatus = () => {} }) {
  const ydoc = new Y.Doc();
  const text = ydoc.getText('content');
  // CodeMirror injects its styles at run time; in a document that is a <style> element, which
  // the page's Content-Security-Policy (style-src 'self') refuses, and the editor then draws
  // wrongly (the gutter above the text). In a shadow root it uses a constructed stylesheet
  // (adoptedStyleSheets), which that policy allows: the policy stays strict, the editor whole.
  const host = document.createElement('div');
  host.className = 'editor-host';
  parent.append(host);
  const root = host.attachShadow({ mode: 'open' });
  const view = new EditorView({
    parent: root,
    root,
    extensions: [
      // the page's colours reach into the shadow root through its custom properties
      EditorView.theme({
        '&': { minHeight: '20rem', background: 'var(--panel)', color: 'var(--text)' },
        '&.cm-focused': { outline: '2px solid var(--accent)' },
        '.cm-gutters': { background: 'var(--bg)', color: 'var(--muted)', borderRight: '1px solid var(--line)' },
        '.cm-scroller': { fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace' },
      }),
      minimalSetup,
      lineNumbers(),
      highlightActiveLine(),
      EditorView.lineWrapping,
      yCollab(text, null),
      EditorView.contentAttributes.of({ 'aria-label': 'Document', 'aria-multiline': 'true' }),
    ],
  });
  let pending = 0;
  const sent = () => { pending -= 1; if (pending === 0) onStatus('saved', 'ok'); };
  function push(update) {
    pending += 1;
    onStatus('saving…', 'warn');
    client.send('doc_update', { workspace, doc, update: toBase64(update) })
      .then(sent)
      .catch((e) => { pending -= 1; onStatus(`not saved: ${e.message}`, 'bad'); });
  }
  async function sync() {
    const r = await client.send('doc_sync', { workspace, doc, state_vector: toBase64(Y.encodeStateVector(ydoc)) });
    Y.applyUpdate(ydoc, fromBase64(r.update), 'remote');
    // what the server lacks: edits made here while the connection was away
    const mine = Y.encodeStateAsUpdate(ydoc, fromBase64(r.state_vector));
    if (mine.length > 2) push(mine);
    if (pending === 0) onStatus('saved', 'ok');
  }
  const onUpdate = (update, origin) => { if (origin !== 'remote') push(update); };
  ydoc.on('update', onUpdate);
  const onEvent = (e) => {
    if (e.type === 'doc_update' && e.scope === `workspace:${workspace}` && e.data?.doc === doc) {
      Y.applyUpdate(ydoc, fromBase64(e.data.update), 'remote');
    }
  };
  const onState = (s) => { if (s.state === 'connected') sync().catch((e) => onStatus(e.message, 'bad')); };
  client.on('event', onEvent);
  client.on('state', onState);
  onStatus('loading…', 'warn');
  sync().catch((e) => onStatus(e.message, 'bad'));
  return () => {
    client.off('event', onEvent);
    client.off('state', onState);
    ydoc.off('update', onUpdate);
    view.destroy();
    host.remove();
    ydoc.destroy();
  };
}
