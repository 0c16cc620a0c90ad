// The team server's login form: POST /api/v1/login sets an HttpOnly session cookie, then back to the runs.
"use strict";
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const message = document.getElementById("message");
  const resp = await fetch("/api/v1/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: form.get("user"), password: form.get("password") }),
  });
  if (resp.ok) { location.href = "/"; return; }
  const body = await resp.json().catch(() => ({}));
  message.textContent = (body.error && body.error.message) || `${resp.status}`;
  if (resp.status === 429) { message.textContent += ` (retry in ${resp.headers.get("Retry-After")} s)`; }
});
