// sluice console: pan/zoom of DAGs, action buttons and dialogs through the API, live instance
// state and log tail by polling. No framework, no build step.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const POLL_MS = 1000;
  const FINAL = new Set(["succeeded", "failed", "terminated", "cancelled"]);

  function flash(message, ok) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.className = ok ? "ok" : "";
    box.hidden = false;
  }

  // Every action goes to /console/api/<API path>: the API itself authorizes it.
  async function callApi(path, body) {
    const response = await fetch("/console/api" + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body === undefined ? {} : body),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const err = data && data.error ? data.error : { message: response.statusText };
      const field = err.field ? " (" + err.field + ")" : "";
      throw new Error(response.status + ": " + err.message + field);
    }
    return data;
  }

  function thenGo(template, data) {
    if (!template) { window.location.reload(); return; }
    const id = data && (data.instance_id || data.id);
    window.location.assign(template.replace("{id}", id));
  }

  // ------------------------------------------------------------------ buttons and dialogs
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("[data-action]");
    if (button) {
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
      button.disabled = true;
      try {
        const data = await callApi(button.dataset.action, JSON.parse(button.dataset.body || "{}"));
        thenGo(button.dataset.then, data);
      } catch (e) {
        flash(e.message, false);
        button.disabled = false;
      }
      return;
    }
    const opener = ev.target.closest("[data-open]");
    if (opener) { document.getElementById(opener.dataset.open).showModal(); return; }
    const closer = ev.target.closest("[data-close]");
    if (closer) { closer.closest("dialog").close(); return; }
    const logButton = ev.target.closest("[data-log-node]");
    if (logButton) { followLog(logButton.dataset.logNode, logButton.dataset.logAttempt); return; }
    const node = ev.target.closest("#live-root svg.dag .node");
    if (node && !dragged) { followLog(node.dataset.node, null); }
  });

  function formBody(form) {
    const body = {};
    for (const el of form.elements) {
      if (!el.name) continue;
      if (el.type === "checkbox") { if (el.checked) body[el.name] = true; continue; }
      const value = el.value.trim();
      if (value === "") continue;
      if (el.tagName === "TEXTAREA") {
        try { body[el.name] = JSON.parse(value); }
        catch (e) { throw new Error(el.name + ": not valid JSON (" + e.message + ")"); }
      } else if (el.type === "number") {
        body[el.name] = Number(value);
      } else {
        body[el.name] = value;
      }
    }
    return body;
  }

  document.addEventListener("submit", async (ev) => {
    const form = ev.target.closest("form[data-submit]");
    if (!form) return;
    ev.preventDefault();
    const error = form.querySelector("[data-error]");
    const submit = form.querySelector("[type=submit]");
    if (submit.disabled) return;  // a second click while the first request is out
    error.hidden = true;
    submit.disabled = true;
    try {
      const data = await callApi(form.dataset.submit, formBody(form));
      if (form.dataset.kind === "run") {
        window.location.assign("/instances/" + data.instance_id);
      } else if (form.dataset.kind === "notify-test") {
        window.location.assign("/notifications");
      } else {
        window.location.assign("/instances?backfill=" + data.id);
      }
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });

  // ------------------------------------------------------------------------- DAG pan/zoom
  let dragged = false;

  function setupDag(svg) {
    const full = { w: Number(svg.dataset.width), h: Number(svg.dataset.height) };
    const box = () => svg.getBoundingClientRect();
    let view = { x: 0, y: 0, w: full.w, h: full.h };
    const apply = () => svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
    // 1:1 shows graph units as pixels; "fit" shows the whole graph but never enlarges it.
    const frame = (scale) => {
      const r = box();
      view = { x: 0, y: 0, w: (r.width || full.w) * scale, h: (r.height || full.h) * scale };
      apply();
    };
    const oneToOne = () => frame(1);
    const fit = () => {
      const r = box();
      frame(Math.max(full.w / (r.width || full.w), full.h / (r.height || full.h), 1));
    };
    // Large graphs open at 1:1 so names stay readable; small ones are shown whole.
    const r = box();
    if (full.w > r.width * 1.5 || full.h > r.height * 1.5) oneToOne(); else fit();

    const zoom = (factor, cx, cy) => {
      const rect = box();
      const px = cx === undefined ? 0.5 : (cx - rect.left) / rect.width;
      const py = cy === undefined ? 0.5 : (cy - rect.top) / rect.height;
      const w = Math.min(Math.max(view.w * factor, 50), full.w * 4 + 200);
      const h = view.h * (w / view.w);
      view = { x: view.x + (view.w - w) * px, y: view.y + (view.h - h) * py, w, h };
      apply();
    };
    svg.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      zoom(ev.deltaY > 0 ? 1.15 : 1 / 1.15, ev.clientX, ev.clientY);
    }, { passive: false });
    let start = null;
    svg.addEventListener("pointerdown", (ev) => {
      start = { x: ev.clientX, y: ev.clientY, view: { ...view } };
      dragged = false;
    });
    window.addEventListener("pointermove", (ev) => {
      if (!start) return;
      const dx = ev.clientX - start.x, dy = ev.clientY - start.y;
      if (Math.abs(dx) + Math.abs(dy) > 4) { dragged = true; svg.classList.add("panning"); }
      const scale = view.w / box().width;
      view = { ...view, x: start.view.x - dx * scale, y: start.view.y - dy * scale };
      apply();
    });
    window.addEventListener("pointerup", () => {
      start = null;
      svg.classList.remove("panning");
      setTimeout(() => { dragged = false; }, 0);
    });
    const tools = svg.previousElementSibling;
    tools.querySelectorAll("[data-dag-zoom]").forEach((b) => b.addEventListener("click", () => {
      const what = b.dataset.dagZoom;
      if (what === "in") zoom(1 / 1.3); else if (what === "out") zoom(1.3);
      else if (what === "fit") fit(); else oneToOne();
    }));
    const find = tools.querySelector("[data-dag-find]");
    find.addEventListener("change", () => {
      svg.querySelectorAll(".node.found").forEach((n) => n.classList.remove("found"));
      const wanted = find.value.trim();
      if (!wanted) return;
      const nodes = [...svg.querySelectorAll(".node")];
      const node = nodes.find((n) => n.dataset.node === wanted)
        || nodes.find((n) => n.dataset.node.includes(wanted));
      if (!node) { flash("no node named like " + wanted, false); return; }
      node.classList.add("found");
      const m = /translate\(([-\d.]+),([-\d.]+)\)/.exec(node.getAttribute("transform"));
      view = { ...view, x: Number(m[1]) - view.w / 3, y: Number(m[2]) - view.h / 3 };
      apply();
    });
  }

  // ------------------------------------------------------------ live instance and its log
  let logTarget = null;

  function followLog(node, attempt) {
    const root = document.getElementById("live-root");
    if (!root) return;
    logTarget = { node, attempt, seq: 0, shownAttempt: null, done: false };
    document.getElementById("log").textContent = "";
    document.getElementById("log-node").textContent = node + (attempt ? " #" + attempt : " (latest)");
    pollLog(root);
  }

  async function pollLog(root) {
    const target = logTarget;
    if (!target || target.done || target.busy) return;
    target.busy = true;
    try {
      const params = new URLSearchParams({ after_seq: String(target.seq) });
      if (target.attempt) params.set("attempt", target.attempt);
      else if (target.shownAttempt) params.set("attempt", target.shownAttempt);
      const url = "/console/api" + root.dataset.log + encodeURIComponent(target.node) + "/log?" + params;
      const response = await fetch(url, { credentials: "same-origin" });
      if (target !== logTarget) return;
      if (!response.ok) { target.done = true; return; }
      const text = await response.text();
      const attemptHeader = response.headers.get("x-sluice-attempt");
      if (attemptHeader) target.shownAttempt = attemptHeader;
      const last = response.headers.get("x-sluice-last-seq");
      if (last) target.seq = Number(last);
      if (text) document.getElementById("log").textContent += text;
      if (response.headers.get("x-sluice-finished") === "true" && !text) target.done = true;
    } finally {
      target.busy = false;
    }
  }

  function setupLive(root) {
    const svg = root.querySelector("svg.dag");
    let timer = null;
    let lastHtml = null;
    const tick = async () => {
      if (document.hidden) return;
      try {
        const response = await fetch(root.dataset.live, { credentials: "same-origin" });
        if (response.ok) {
          const live = document.getElementById("live");
          const html = await response.text();
          if (html !== lastHtml) {
            // Keep open what the reader opened (an attempt's parameters) across the swap.
            const open = [...live.querySelectorAll("details[open][data-key]")].map((d) => d.dataset.key);
            live.innerHTML = html;
            lastHtml = html;
            for (const d of live.querySelectorAll("details[data-key]")) {
              if (open.includes(d.dataset.key)) d.open = true;
            }
          }
          const data = live.querySelector("#live-data");
          const states = JSON.parse(data.dataset.states);
          for (const node of svg.querySelectorAll(".node")) {
            const state = states[node.dataset.node];
            node.setAttribute("class", "node st-" + state + (node.classList.contains("found") ? " found" : ""));
            const label = node.querySelector(".state");
            if (label) label.textContent = state;
          }
          const badge = document.getElementById("instance-state");
          const state = data.dataset.instanceState;
          badge.textContent = state;
          badge.className = "state st-" + state;
          await pollLog(root);
          // A rerun or terminate the executor has not carried out yet will change a finished
          // state: keep polling until it has.
          const pending = data.dataset.requestPending === "yes";
          if (FINAL.has(state) && !pending && (!logTarget || logTarget.done)) {
            // One last look a moment later catches log lines written with the final state.
            clearInterval(timer);
            setTimeout(() => pollLog(root), POLL_MS);
          }
        }
      } catch (e) { /* a failed poll is retried on the next tick */ }
    };
    timer = setInterval(tick, POLL_MS);
  }

  // Lists showing live state ([data-refresh]: milliseconds) re-read this same page (or the smaller
  // one named by data-refresh-from) and swap in the element of the same id, so statuses change
  // without a reload.
  function setupRefresh(el) {
    setInterval(async () => {
      if (document.hidden) return;
      try {
        const source = el.dataset.refreshFrom || window.location.href;
        const response = await fetch(source, { credentials: "same-origin" });
        if (!response.ok) return;
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        const next = fresh.getElementById(el.id);
        if (next) el.innerHTML = next.innerHTML;
      } catch (e) { /* retried on the next tick */ }
    }, Number(el.dataset.refresh));
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-refresh]").forEach(setupRefresh);
    document.querySelectorAll("svg.dag").forEach(setupDag);
    const root = document.getElementById("live-root");
    if (root) setupLive(root);
  });
})();
