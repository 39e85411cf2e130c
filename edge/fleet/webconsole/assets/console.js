// edgekit fleet console: local times, live deployment progress over
// Server-Sent Events, and forms sent without leaving the page (uploads
// with a progress bar). The pages work without it, less comfortably.
"use strict";

const timeFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
});

// localTimes shows every <time datetime> under root in the browser's
// time zone.
function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    const d = new Date(t.dateTime);
    if (!isNaN(d)) {
      t.title = t.textContent;
      t.textContent = timeFormat.format(d);
    }
  }
}

// showActions shows the deployment actions that fit its state.
function showActions(state) {
  for (const f of document.querySelectorAll("form[data-when]")) {
    f.hidden = !f.dataset.when.split(" ").includes(state);
  }
}

function followProgress() {
  const live = document.getElementById("live");
  if (!live || !live.dataset.events || !window.EventSource) return;
  const es = new EventSource(live.dataset.events);
  es.addEventListener("progress", (e) => {
    live.innerHTML = e.data; // rendered and escaped by the server's templates
    localTimes(live);
    const inner = live.querySelector("[data-state]");
    if (inner) showActions(inner.dataset.state);
  });
  es.addEventListener("signedout", () => { es.close(); location.assign("/ui/signin"); });
}

// notice shows a message in the page's status line.
function notice(text, error) {
  const n = document.getElementById("notice");
  if (!n) return;
  n.textContent = text;
  n.className = "message " + (error ? "error" : "ok");
  n.setAttribute("role", error ? "alert" : "status");
  n.hidden = false;
}

// scriptForms sends the forms marked data-xhr without leaving the page:
// with a progress bar for an upload, the answer's message shown, and the
// browser sent on where the form leads unless it is marked data-stay
// (the page follows the change itself).
function scriptForms() {
  for (const form of document.querySelectorAll("form[data-xhr]")) {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const bar = form.querySelector("progress");
      const err = form.querySelector(".message.error");
      const button = form.querySelector("button[type=submit]");
      const fail = (text) => {
        if (bar) bar.hidden = true;
        if (err) { err.hidden = false; err.textContent = text; } else notice(text, true);
      };
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", form.elements.csrf.value);
      if (bar) xhr.upload.addEventListener("progress", (p) => {
        if (p.lengthComputable) { bar.hidden = false; bar.value = Math.round(100 * p.loaded / p.total); }
      });
      xhr.addEventListener("load", () => {
        button.disabled = false;
        if (xhr.status !== 200) { fail(xhr.responseText.trim() || ("HTTP " + xhr.status)); return; }
        const answer = JSON.parse(xhr.responseText);
        if ("stay" in form.dataset) { notice(answer.message, false); form.reset(); return; }
        sessionStorage.setItem("edgekit-notice", answer.message);
        location.assign(answer.location);
      });
      xhr.addEventListener("error", () => { button.disabled = false; fail("The fleet could not be reached."); });
      button.disabled = true;
      if (err) err.hidden = true;
      if (form.enctype === "multipart/form-data") xhr.send(new FormData(form));
      else xhr.send(new URLSearchParams(new FormData(form)));
    });
  }
  const left = sessionStorage.getItem("edgekit-notice");
  if (left) { sessionStorage.removeItem("edgekit-notice"); notice(left, false); }
}

// busyForms say so while a slow answer comes (a gateway's logs).
function busyForms() {
  for (const form of document.querySelectorAll("form[data-busy]")) {
    form.addEventListener("submit", () => {
      const button = form.querySelector("button[type=submit]");
      form.setAttribute("aria-busy", "true");
      button.disabled = true;
      button.textContent = form.dataset.busy;
    });
  }
}

localTimes(document);
busyForms();
followProgress();
scriptForms();
