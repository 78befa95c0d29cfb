// minisaga console: follow the server-sent events of a page's live parts.
// Each element with data-live names its event stream; each event carries the
// part's HTML, written by the server, which replaces the part's content.
"use strict";

function follow(part) {
  if (part.dataset.ended === "true") {
    return; // an ended saga does not move any more (a resume reloads the page)
  }
  const source = new EventSource(part.dataset.live);
  const announce = document.getElementById("announce");
  const replace = (event) => {
    part.innerHTML = event.data;
    part.dataset.updated = String(Number(part.dataset.updated || 0) + 1);
    const summary = part.querySelector("#summary");
    if (announce && summary && announce.textContent !== summary.textContent) {
      announce.textContent = summary.textContent; // read out once, not the whole page
    }
  };
  source.addEventListener("saga", replace);
  source.addEventListener("counts", replace);
  source.addEventListener("failure", (event) => {
    const note = document.createElement("p");
    note.className = "notice error";
    note.setAttribute("role", "alert");
    note.textContent = "Live updates stopped: " + event.data;
    part.before(note);
    source.close();
  });
  source.addEventListener("end", () => {
    part.dataset.ended = "true";
    source.close();
  });
}

document.querySelectorAll("[data-live]").forEach(follow);
