// perfnb demo front end: cards, chat and presence, kept fresh by smart polling.
//
// Smart polling: GET /api/poll?since=<cursor> every 2 s; after a run of polls with
// no news, or while the page is hidden, every 5 s; back to 2 s on news, on a user
// action or when the page shows again. Presence heartbeats ride on the poll cycle
// (no timer of their own).
//
// The polling-runaway fault: when a poll answer says `runaway: true`, the loop
// stops backing off and every answer starts one more loop (capped, so a demo tab
// never takes the browser down). The flag is read from each answer, so it can be
// flipped at run time; extra loops end when it goes off.
"use strict";

(function () {
  const POLL_MS = 2000;
  const IDLE_MS = 5000;
  const IDLE_AFTER = 5; // polls without news before backing off
  const PRESENCE_EVERY_MS = 15000;
  const MAX_LOOPS = 32;
  const GUEST_KEY = "perfnb-demo-guest";

  const state = {
    user: null,
    cursor: null,
    cards: new Map(),
    conversations: new Map(),
    current: null, // conversation id shown
    messages: new Map(),
    emptyPolls: 0,
    runaway: false,
    loops: 0, // poll loops running (1 when healthy)
    polls: 0,
    timers: new Map(), // loop id -> timeout handle while waiting
    lastPresence: 0,
    delay: POLL_MS,
  };
  window.perfnbDemo = { state };

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children) node.append(child);
    return node;
  }

  async function api(method, path, body) {
    const opts = { method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    if (res.status === 204) return null;
    const type = res.headers.get("content-type") || "";
    const data = type.includes("json") ? await res.json() : await res.text();
    if (!res.ok) {
      const err = new Error((data && data.error) || res.status + " " + res.statusText);
      err.status = res.status;
      err.data = data;
      throw err;
    }
    return data;
  }

  function showError(err) {
    $("error").textContent = err ? String(err.message || err) : "";
  }

  // -- signing in ---------------------------------------------------------------

  async function signIn() {
    const saved = JSON.parse(localStorage.getItem(GUEST_KEY) || "null");
    if (saved) {
      try {
        const out = await api("POST", "/api/login", saved);
        return out.user;
      } catch (err) {
        if (err.status !== 401 && err.status !== 400) throw err;
      }
    }
    const out = await api("POST", "/api/guests", {});
    localStorage.setItem(GUEST_KEY, JSON.stringify({ user_id: out.user.id, code: out.code }));
    return out.user;
  }

  // -- rendering ----------------------------------------------------------------

  function renderCards() {
    const list = $("cards");
    const items = [...state.cards.values()].sort((a, b) => b.id - a.id);
    list.replaceChildren(
      ...items.map((card) =>
        el(
          "li",
          {},
          el(
            "div",
            { className: "text" },
            el("strong", { textContent: card.title }),
            el("div", { textContent: card.body }),
            el("div", { className: "meta", textContent: "v" + card.version + " · " + card.updated })
          ),
          el("button", { className: "quiet", textContent: "Edit", onclick: () => editCard(card) }),
          el("button", { className: "quiet", textContent: "Delete", onclick: () => deleteCard(card) })
        )
      )
    );
  }

  function renderConversations() {
    const items = [...state.conversations.values()].sort((a, b) => b.id - a.id);
    $("conversations").replaceChildren(
      ...items.map((conv) =>
        el("li", {
          textContent: conv.title,
          className: conv.id === state.current ? "current" : "",
          onclick: () => openConversation(conv.id),
        })
      )
    );
  }

  function renderMessages() {
    const items = [...state.messages.values()].sort((a, b) => a.id - b.id);
    const box = $("messages");
    box.replaceChildren(
      ...items.map((m) =>
        el("li", {}, el("span", { className: "meta", textContent: m.author_id.slice(0, 6) + ": " }), m.body)
      )
    );
    box.scrollTop = box.scrollHeight;
  }

  function renderPresence(users) {
    $("presence").replaceChildren(
      ...users.map((u) => el("li", { textContent: u.name + " — " + u.status + (u.location ? " (" + u.location + ")" : "") }))
    );
  }

  function renderStatus() {
    const status = $("status");
    const every = state.delay / 1000;
    status.textContent =
      (state.runaway ? "POLLING RUNAWAY: " + state.loops + " poll loops · " : "") +
      "polling every " + every + " s · cursor " + state.cursor + " · " + state.polls + " polls";
    status.className = state.runaway ? "runaway" : "";
  }

  // -- loading and applying changes -------------------------------------------

  async function loadAll() {
    state.cards.clear();
    let after = 0;
    for (;;) {
      const page = await api("GET", "/api/cards?limit=200&after=" + after);
      for (const card of page.cards) state.cards.set(card.id, card);
      if (page.next === null) break;
      after = page.next;
    }
    const convs = await api("GET", "/api/conversations");
    state.conversations = new Map(convs.conversations.map((c) => [c.id, c]));
    renderCards();
    renderConversations();
    if (state.current !== null) await openConversation(state.current);
  }

  function apply(changes) {
    let cards = false;
    let convs = false;
    let msgs = false;
    for (const ch of changes) {
      if (ch.entity === "card") {
        if (ch.op === "delete") state.cards.delete(ch.id);
        else state.cards.set(ch.id, ch.data);
        cards = true;
      } else if (ch.entity === "conversation") {
        state.conversations.set(ch.id, ch.data);
        convs = true;
      } else if (ch.entity === "message" && ch.data.conversation_id === state.current) {
        state.messages.set(ch.id, ch.data);
        msgs = true;
      }
    }
    if (cards) renderCards();
    if (convs) renderConversations();
    if (msgs) renderMessages();
  }

  // -- smart polling --------------------------------------------------------------

  function nextDelay() {
    if (state.runaway) return POLL_MS; // the bug: no back-off at all
    if (document.hidden || state.emptyPolls >= IDLE_AFTER) return IDLE_MS;
    return POLL_MS;
  }

  function schedule(loop, delay) {
    clearTimeout(state.timers.get(loop));
    state.timers.set(loop, setTimeout(() => pollOnce(loop), delay));
    if (loop === 0) state.delay = delay;
  }

  function startLoop() {
    const loop = state.loops++;
    schedule(loop, POLL_MS);
  }

  function endLoop(loop) {
    state.timers.delete(loop);
    state.loops--;
  }

  async function presenceHeartbeat() {
    state.lastPresence = Date.now();
    const where = location.hash.slice(1) || "cards";
    await api("POST", "/api/presence", { status: document.hidden ? "idle" : "active", location: where });
    const out = await api("GET", "/api/presence");
    renderPresence(out.users);
  }

  async function pollOnce(loop) {
    state.timers.delete(loop);
    let data;
    try {
      const query = state.cursor === null ? "" : "?since=" + state.cursor;
      data = await api("GET", "/api/poll" + query);
    } catch (err) {
      showError(err);
      if (err.status === 401) {
        state.user = await signIn().catch(() => null);
      }
      if (loop === 0) schedule(0, IDLE_MS);
      else endLoop(loop);
      return;
    }
    showError(null);
    state.polls++;
    if (data.reset) {
      state.cursor = data.cursor;
      await loadAll().catch(showError);
    } else {
      if (state.cursor !== null) apply(data.changes);
      state.cursor = Math.max(state.cursor || 0, data.cursor);
    }
    state.emptyPolls = data.changes.length ? 0 : state.emptyPolls + 1;
    state.runaway = Boolean(data.runaway);
    if (loop === 0 && Date.now() - state.lastPresence > PRESENCE_EVERY_MS) {
      presenceHeartbeat().catch(showError);
    }
    if (state.runaway) {
      schedule(loop, POLL_MS);
      if (state.loops < MAX_LOOPS) startLoop();
    } else if (loop !== 0) {
      endLoop(loop); // the fault went off: the extra loops die out
    } else {
      schedule(0, data.more ? 0 : nextDelay());
    }
    renderStatus();
  }

  // Something happened that the user will want to see soon: back to the fast pace.
  function wake() {
    state.emptyPolls = 0;
    if (state.timers.has(0) && state.delay > POLL_MS) schedule(0, POLL_MS);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) wake();
    else if (state.timers.has(0) && !state.runaway) schedule(0, IDLE_MS);
    presenceHeartbeat().catch(showError);
  });

  // -- actions -----------------------------------------------------------------------

  function editCard(card) {
    const form = $("card-form");
    form.title.value = card.title;
    form.body.value = card.body;
    form.id.value = card.id;
    form.version.value = card.version;
    $("card-save").textContent = "Save";
    $("card-cancel").hidden = false;
  }

  function resetCardForm() {
    const form = $("card-form");
    form.reset();
    form.id.value = "";
    form.version.value = "";
    $("card-save").textContent = "Add card";
    $("card-cancel").hidden = true;
  }

  async function saveCard(event) {
    event.preventDefault();
    const form = event.target;
    const body = { title: form.title.value, body: form.body.value };
    try {
      let card;
      if (form.id.value) {
        body.version = Number(form.version.value);
        card = await api("PUT", "/api/cards/" + form.id.value, body);
      } else {
        card = await api("POST", "/api/cards", body);
      }
      state.cards.set(card.id, card);
      renderCards();
      resetCardForm();
      showError(null);
    } catch (err) {
      if (err.status === 409) {
        state.cards.set(err.data.current.id, err.data.current);
        renderCards();
        editCard(err.data.current);
      }
      showError(err);
    }
    wake();
  }

  async function deleteCard(card) {
    try {
      await api("DELETE", "/api/cards/" + card.id);
      state.cards.delete(card.id);
      renderCards();
    } catch (err) {
      showError(err);
    }
    wake();
  }

  async function bulkImport() {
    const stamp = new Date().toISOString().slice(11, 19);
    const cards = Array.from({ length: 20 }, (_, i) => ({
      title: "Imported " + stamp + " #" + (i + 1),
      body: "Sample card " + (i + 1) + " from a bulk import.",
    }));
    try {
      await api("POST", "/api/cards/bulk", { cards });
    } catch (err) {
      showError(err);
    }
    wake();
  }

  async function openConversation(id) {
    state.current = id;
    state.messages.clear();
    renderConversations();
    try {
      const out = await api("GET", "/api/conversations/" + id + "/messages");
      for (const m of out.messages) state.messages.set(m.id, m);
    } catch (err) {
      showError(err);
    }
    renderMessages();
  }

  async function startConversation(event) {
    event.preventDefault();
    try {
      const conv = await api("POST", "/api/conversations", { title: event.target.title.value });
      state.conversations.set(conv.id, conv);
      event.target.reset();
      await openConversation(conv.id);
    } catch (err) {
      showError(err);
    }
    wake();
  }

  async function sendMessage(event) {
    event.preventDefault();
    if (state.current === null) return showError("pick or start a conversation first");
    try {
      const msg = await api("POST", "/api/conversations/" + state.current + "/messages", {
        body: event.target.body.value,
      });
      state.messages.set(msg.id, msg);
      renderMessages();
      event.target.reset();
    } catch (err) {
      showError(err);
    }
    wake();
  }

  function route() {
    const view = location.hash.slice(1) || "cards";
    for (const node of document.querySelectorAll("section[data-view]")) {
      node.hidden = node.dataset.view !== view;
    }
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("active", link.dataset.view === view);
    }
  }

  // -- start ------------------------------------------------------------------------

  async function start() {
    route();
    window.addEventListener("hashchange", route);
    $("card-form").addEventListener("submit", saveCard);
    $("card-cancel").addEventListener("click", resetCardForm);
    $("bulk-import").addEventListener("click", bulkImport);
    $("conversation-form").addEventListener("submit", startConversation);
    $("message-form").addEventListener("submit", sendMessage);
    try {
      state.user = await signIn();
      $("who").textContent = state.user.name + " (" + state.user.id.slice(0, 6) + ")";
      const first = await api("GET", "/api/poll");
      state.cursor = first.cursor;
      await loadAll();
      await presenceHeartbeat();
    } catch (err) {
      showError(err);
    }
    startLoop();
    renderStatus();
  }

  start();
})();
