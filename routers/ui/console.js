// The console's frame: which screen the address names (#/runs, #/runs/<id>, #/inbox, #/start, #/models),
// the key dialog, and the approvals count in the menu.

import { api, currentKey, onKeyNeeded, setKey } from "./api.js";
import { clear, showInboxCount } from "./dom.js";
import { every, inboxView, modelsView, runView, runsView, startView } from "./views.js";

const INBOX_REFRESH_MS = 15000; // the approvals count in the menu
const main = document.getElementById("view");
const dialog = document.getElementById("key-dialog");
const keyInput = document.getElementById("key-input");
const keyWhy = document.getElementById("key-why");
let stopView = () => {};
let declined = false; // the person closed the dialog: ask again only when they press "Key"

// -- the key -------------------------------------------------------------------------------------------------

function askForKey(why) {
  if (declined) return Promise.resolve(null);
  return new Promise((resolve) => {
    keyWhy.textContent = why || "This gateway needs an API key.";
    keyInput.value = "";
    const done = (key) => {
      dialog.removeEventListener("close", onClose);
      document.getElementById("key-form").removeEventListener("submit", onSubmit);
      if (dialog.open) dialog.close();
      resolve(key);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      const key = keyInput.value.trim();
      setKey(key || null);
      declined = !key;
      done(key || null);
    };
    const onClose = () => {
      declined = true;
      done(null);
    };
    document.getElementById("key-form").addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    keyInput.focus();
  });
}

onKeyNeeded(askForKey);

document.getElementById("key-cancel").addEventListener("click", () => dialog.close());
document.getElementById("key-forget").addEventListener("click", () => {
  setKey(null);
  keyInput.value = "";
});
document.getElementById("key-button").addEventListener("click", async () => {
  declined = false;
  const key = await askForKey(currentKey() ? "Replace the key this tab uses (empty: forget it)." : "Enter an API key.");
  if (key !== null || !currentKey()) route();
});

// -- the screens ---------------------------------------------------------------------------------------------

function route(event) {
  stopView();
  const [path, query] = (location.hash.replace(/^#/, "") || "/runs").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const section = parts[0] || "runs";
  for (const link of document.querySelectorAll("nav a")) {
    link.toggleAttribute("aria-current", link.dataset.nav === section);
  }
  clear(main);
  if (section === "runs" && parts[1]) stopView = runView(main, decodeURIComponent(parts[1]));
  else if (section === "inbox") stopView = inboxView(main);
  else if (section === "start") stopView = startView(main);
  else if (section === "models") stopView = modelsView(main);
  else stopView = runsView(main, params);
  document.title = `${section === "runs" && parts[1] ? parts[1] : section} · lmstudio-bridge console`;
  if (event) main.focus({ preventScroll: true }); // moved to another screen: start reading there
}

async function inboxCount() {
  if (declined && !currentKey()) return;
  try {
    showInboxCount(await api("/v1/runs?status=awaiting_approval&limit=50"));
  } catch {
    showInboxCount(null);
  }
}

window.addEventListener("hashchange", route);
route();
inboxCount();
every(INBOX_REFRESH_MS, inboxCount);
window.addEventListener("hashchange", inboxCount); // fresh when the person moves (an approval decided, a run started)

