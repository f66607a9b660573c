/* Booking (and moving) a consultation's time without leaving the page when the time is gone.
   form[data-slot-form] is the book or reschedule page's form. Its submit is sent with fetch() as
   JSON (Accept: application/json, the CSRF token in X-CSRFToken and in the form's own field):
   - 200 {ok, redirect}: the time is booked; go to the consult (its page shows "booked").
   - a refusal {error, message}: the message is shown in the page's status area (an aria-live region
     above the form, styled like the flash a page without script shows). On 409 (the time was just
     booked for another consult) the times still open are fetched from data-open-slots-url and the
     list is written again without the one just taken, so the doctor chooses another at once.
   - no answer (the connection dropped): says so (trying again is safe: a consult is booked once).
   The button is disabled while a request is out and enabled again after.
   Without this script the same form posts as a page, and a refusal re-renders the page. */
(function () {
  "use strict";

  var form = document.querySelector("form[data-slot-form]");
  if (!form || !window.fetch || !window.FormData) return;
  var statusBox = document.getElementById("slot-status");
  var button = form.querySelector("button[type=submit]");
  var tokenField = form.querySelector("input[name=csrf_token]");
  var busy = false;

  function say(kind, message) {
    if (!statusBox) return;
    // the page's own flashes (e.g. from before a refusal) are stale once the script speaks
    Array.prototype.forEach.call(document.querySelectorAll("main > .flash"), function (old) { old.remove(); });
    statusBox.textContent = "";
    if (!message) return;
    var note = document.createElement("div");
    note.className = "flash " + kind;
    note.textContent = message;
    statusBox.appendChild(note);
  }

  function setBusy(on) {
    busy = on;
    if (button) button.disabled = on;
    form.setAttribute("aria-busy", on ? "true" : "false");
  }

  function answer(response) {
    return response.json().then(function (body) {
      return { status: response.status, body: body };
    }, function () {
      return { status: response.status, body: null };
    });
  }

  function renderSlots(slots) {
    var list = form.querySelector("ul.slots");
    if (!list) return;
    var chosen = form.querySelector("input[name=slot]:checked");
    var keep = chosen ? chosen.value : null;
    var first = list.querySelector("input[name=slot]");
    var idBase = first && first.id ? first.id.replace(/-\d+$/, "") : "slot";
    list.textContent = "";
    slots.forEach(function (slot, i) {
      var li = document.createElement("li");
      var label = document.createElement("label");
      var input = document.createElement("input");
      input.type = "radio";
      input.name = "slot";
      input.id = idBase + "-" + i;
      input.value = slot.value;
      if (slot.value === keep) input.checked = true;
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + slot.label));
      li.appendChild(label);
      list.appendChild(li);
    });
    var empty = form.querySelector("p.slots-empty");
    if (!slots.length) {
      list.hidden = true;
      if (!empty) {
        empty = document.createElement("p");
        empty.className = "empty slots-empty";
        empty.textContent = form.getAttribute("data-empty-text") || "";
        list.parentNode.insertBefore(empty, list.nextSibling);
      }
      if (button) button.hidden = true;
    } else {
      list.hidden = false;
      if (empty) empty.remove();
      if (button) button.hidden = false;
    }
  }

  function refreshSlots(message) {
    var url = form.getAttribute("data-open-slots-url");
    if (!url) return Promise.resolve();
    return fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(answer)
      .then(function (reply) {
        if (reply.status === 200 && reply.body && reply.body.slots) {
          renderSlots(reply.body.slots);
        } else {
          say("error", message + " " + t("The list of times could not be brought up to date; reload the page."));
        }
      }, function () {
        say("error", message + " " + t("The list of times could not be brought up to date; reload the page."));
      });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) return;
    setBusy(true);
    say("", "");
    var headers = { "Accept": "application/json" };
    if (tokenField) headers["X-CSRFToken"] = tokenField.value;
    fetch(form.action || window.location.href, {
      method: "POST", body: new FormData(form), headers: headers, credentials: "same-origin"
    }).then(answer).then(function (reply) {
      var body = reply.body || {};
      if (reply.status === 200 && body.ok && typeof body.redirect === "string" &&
          body.redirect.charAt(0) === "/" && body.redirect.charAt(1) !== "/") {
        window.location.assign(body.redirect);  // the button stays disabled: the page is going
        return;
      }
      var message = body.message ||
        t("The time could not be booked (error %(status)s). Reload the page and try again.", { status: reply.status });
      say("error", message);
      if (reply.status === 409) {
        return refreshSlots(message).then(function () { setBusy(false); });
      }
      setBusy(false);
    }, function () {
      say("error", t("No answer from Huizhen: the connection may be down. Check it and try again."));
      setBusy(false);
    });
  });
})();
