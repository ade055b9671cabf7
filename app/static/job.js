// The job page: poll the job's JSON, move the progress bar, add the rows that arrived.
"use strict";
(function () {
  const job = document.getElementById("job");
  if (!job) return;
  const statusUrl = job.dataset.statusUrl;
  let after = Number(job.dataset.after);
  const progress = document.getElementById("job-progress");
  const rows = document.querySelector("#job-results tbody");
  const POLL_MS = 1000;

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function addRows(results) {
    for (const row of results) {
      const tr = document.createElement("tr");
      tr.append(cell(row.file), cell(row.prediction ?? ""),
        cell(row.confidence === null ? "" : (row.confidence * 100).toFixed(1) + " %"), cell(row.error ?? ""));
      rows.append(tr);
    }
  }

  function show(summary) {
    progress.value = summary.done;
    progress.textContent = `${summary.done} of ${summary.total}`;
    document.getElementById("job-done").textContent = summary.done;
    document.getElementById("job-failed").textContent = summary.failed;
    document.getElementById("job-error").textContent = summary.error ?? "";
    document.getElementById("job-status").textContent = summary.status;
    document.getElementById("job-download-line").hidden = summary.status !== "done";
  }

  async function poll() {
    let summary;
    try {
      const response = await fetch(`${statusUrl}?after=${after}`, { headers: { Accept: "application/json" } });
      summary = await response.json();
      if (!response.ok) {
        document.getElementById("job-error").textContent = summary.error;
        return;
      }
    } catch (error) {
      setTimeout(poll, POLL_MS * 3); // the server is restarting, or the network dropped: try again
      return;
    }
    addRows(summary.results);
    after = summary.after;
    const finished = summary.status === "done" || summary.status === "failed";
    if (finished && rows.children.length !== summary.done) {
      // Rows recorded out of order while we polled (PostgreSQL): show the whole list once.
      const whole = await (await fetch(statusUrl, { headers: { Accept: "application/json" } })).json();
      rows.replaceChildren();
      addRows(whole.results);
    }
    show(summary);
    if (!finished) setTimeout(poll, POLL_MS);
  }

  if (!["done", "failed"].includes(document.getElementById("job-status").textContent)) setTimeout(poll, POLL_MS);
})();
