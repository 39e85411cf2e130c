// edgekit fleet console: local times, live deployment progress over
// Server-Sent Events, and uploads with a progress bar. The pages work
// without it, less comfortably.
"use strict";

const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium", timeZoneName: "short" });

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

// uploads sends forms marked data-upload with a progress bar.
function uploads() {
  for (const form of document.querySelectorAll("form[data-upload]")) {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const bar = form.querySelector("progress");
      const err = form.querySelector(".message.error");
      const button = form.querySelector("button[type=submit]");
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", form.elements.csrf.value);
      xhr.upload.addEventListener("progress", (p) => {
        if (p.lengthComputable) { bar.hidden = false; bar.value = Math.round(100 * p.loaded / p.total); }
      });
      xhr.addEventListener("load", () => {
        button.disabled = false;
        if (xhr.status === 200) {
          location.assign(JSON.parse(xhr.responseText).location);
          return;
        }
        bar.hidden = true;
        err.hidden = false;
        err.textContent = xhr.responseText.trim() || ("HTTP " + xhr.status);
      });
      xhr.addEventListener("error", () => {
        button.disabled = false;
        err.hidden = false;
        err.textContent = "The upload failed: the fleet could not be reached.";
      });
      button.disabled = true;
      err.hidden = true;
      xhr.send(new FormData(form));
    });
  }
}

localTimes(document);
followProgress();
uploads();
