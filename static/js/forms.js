/* Long forms keep what was typed (issue 10).
   1. Leaving a page whose form[data-unsaved-warning] has unsaved changes asks first (the browser's
      "Leave site?" prompt, via beforeunload), and so does leaving while a file is still uploading.
      Submitting the form is not "leaving with unsaved changes". A form re-rendered with errors
      (data-dirty) starts as unsaved: what it shows was not stored.
   2. .uploader blocks: "Attach file" uploads each chosen file on its own with XMLHttpRequest to the
      consult's JSON endpoint (Accept: application/json, CSRF token in X-CSRFToken), showing each
      file's progress and result in its own row, without leaving the page. A file over the limit,
      of a type that is not accepted, or beyond the consult's maximum number of attachments is
      refused here, before anything is sent (the limits come from the block's data attributes).
   Without this script the same inputs belong to a form that saves the draft with the upload. */
(function () {
  "use strict";

  // --- unsaved changes ------------------------------------------------------------------------

  var uploading = 0;
  var guarded = [];

  function snapshot(form) {
    var parts = [];
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.name === "csrf_token" || el.type === "file" || el.type === "submit" ||
          el.type === "button") return;
      if ((el.type === "checkbox" || el.type === "radio") && !el.checked) return;
      parts.push(el.name + "=" + el.value);
    });
    return parts.join("\u0000");
  }

  function guard(form) {
    var state = { form: form, initial: form.hasAttribute("data-dirty") ? null : snapshot(form), submitting: false };
    form.addEventListener("submit", function () { state.submitting = true; });
    guarded.push(state);
  }

  function unsaved() {
    return guarded.some(function (s) { return !s.submitting && snapshot(s.form) !== s.initial; });
  }

  window.addEventListener("beforeunload", function (event) {
    if (uploading > 0 || unsaved()) {
      event.preventDefault();
      event.returnValue = "";  // older browsers need a value to show their prompt
      return "";
    }
  });
  // A page restored from the back/forward cache may be submitted again.
  window.addEventListener("pageshow", function () { guarded.forEach(function (s) { s.submitting = false; }); });

  Array.prototype.forEach.call(document.querySelectorAll("form[data-unsaved-warning]"), guard);

  // --- uploads --------------------------------------------------------------------------------

  function sizeText(bytes) {
    if (bytes < 1024 * 1024) return Math.max(1, Math.round(bytes / 1024)) + " KB";
    var mb = bytes / (1024 * 1024);
    return (mb >= 10 ? Math.round(mb) : Math.round(mb * 10) / 10) + " MB";
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function flash(kind, message) {
    var main = document.querySelector("main");
    if (!main) return;
    Array.prototype.forEach.call(main.querySelectorAll(":scope > .flash"), function (old) { old.remove(); });
    var note = el("div", "flash " + kind, message);
    note.setAttribute("role", "status");
    main.insertBefore(note, main.firstChild);
  }

  function thumb(item) {
    var link = el("a", "thumb");
    link.href = item.url;
    link.target = "_blank";
    link.rel = "noopener";
    link.title = item.name;
    if (item.is_image) {
      var img = el("img");
      img.src = item.url;
      img.alt = item.description || item.name;
      img.loading = "lazy";
      link.appendChild(img);
    } else {
      link.appendChild(el("div", "pdf", "PDF"));
    }
    var cap = el("div", "cap", item.description || item.name);
    var facts = [item.size_text];
    if (item.page_count) facts.push(t("%(n)s p.", { n: item.page_count }));  // pages
    if (item.width) facts.push(item.width + "\u00d7" + item.height);
    cap.appendChild(el("br"));
    cap.appendChild(el("span", "muted", facts.join(" \u00b7 ")));
    link.appendChild(cap);
    return link;
  }

  function Uploader(box) {
    this.box = box;
    this.input = box.querySelector("input[type=file]");
    this.description = box.querySelector("input[name=description]");
    this.button = box.querySelector("button[type=submit]");
    this.queue = box.querySelector(".upload-queue");
    this.maxBytes = parseInt(box.dataset.maxBytes, 10);
    this.maxCount = parseInt(box.dataset.maxCount, 10);
    this.count = parseInt(box.dataset.count, 10) || 0;
    this.types = box.dataset.types.split(",");
    this.extensions = box.dataset.extensions.split(",");
    this.typesText = box.dataset.typesText;
    this.button.addEventListener("click", this.start.bind(this));
  }

  Uploader.prototype.fieldError = function (message) {
    var field = this.input.closest(".field");
    var box = field.querySelector(".field-error");
    if (!message) {
      if (box) box.remove();
      this.input.removeAttribute("aria-invalid");
      return;
    }
    if (!box) {
      box = el("div", "field-error");
      box.id = "upload-error";
      box.appendChild(el("ul", "errors")).appendChild(el("li"));
      field.appendChild(box);
      var described = (this.input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
      if (described.indexOf(box.id) < 0) described.push(box.id);
      this.input.setAttribute("aria-describedby", described.join(" "));
    }
    box.querySelector("li").textContent = message;
    this.input.setAttribute("aria-invalid", "true");
    field.classList.add("has-error");
  };

  Uploader.prototype.refusal = function (file, queued) {
    var ext = file.name.indexOf(".") >= 0 ? file.name.split(".").pop().toLowerCase() : "";
    if (this.extensions.indexOf(ext) < 0 || (file.type && this.types.indexOf(file.type) < 0)) {
      return t("%(name)s is not a %(types)s file; only those can be attached.", { name: file.name, types: this.typesText });
    }
    if (file.size > this.maxBytes) {
      var size = sizeText(file.size), limit = sizeText(this.maxBytes);
      if (size === limit) size = (file.size / (1024 * 1024)).toFixed(2) + " MB";  // 15.3 MB is not "15 MB"
      return t("%(name)s is %(size)s; the limit is %(limit)s.", { name: file.name, size: size, limit: limit });
    }
    if (file.size === 0) return t("%(name)s is empty.", { name: file.name });
    if (this.count + queued >= this.maxCount) {
      return t("%(name)s was not attached: a consult can have at most %(max)s attachments.", { name: file.name, max: this.maxCount });
    }
    return null;
  };

  Uploader.prototype.row = function (file) {
    var row = el("li", "upload-row");
    row.appendChild(el("span", "upload-name", file.name));
    row.appendChild(el("span", "upload-size muted", sizeText(file.size)));
    var bar = el("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", t("Upload of %(name)s", { name: file.name }));
    row.appendChild(bar);
    row.appendChild(el("span", "upload-status", t("Waiting\u2026")));
    this.queue.hidden = false;
    this.queue.appendChild(row);
    return row;
  };

  Uploader.prototype.settle = function (row, ok, message) {
    row.classList.add(ok ? "done" : "failed");
    var status = row.querySelector(".upload-status");
    status.textContent = message;
    if (!ok) status.setAttribute("role", "alert");
    var bar = row.querySelector("progress");
    if (ok) bar.value = 100; else bar.remove();
  };

  Uploader.prototype.start = function (event) {
    event.preventDefault();
    var self = this;
    var files = Array.prototype.slice.call(this.input.files || []);
    this.fieldError(null);
    if (!files.length) {
      this.fieldError(t("Choose a file to upload."));
      this.input.focus();
      return;
    }
    this.queue.textContent = "";
    var accepted = [];
    files.forEach(function (file) {
      var row = self.row(file);
      var refused = self.refusal(file, accepted.length);
      if (refused) self.settle(row, false, refused);
      else accepted.push({ file: file, row: row });
    });
    var description = this.description ? this.description.value : "";
    this.input.value = "";
    if (!accepted.length) {
      this.fieldError(files.length === 1 ? this.queue.querySelector(".upload-status").textContent
                                         : t("None of the chosen files can be attached; see each file below."));
      return;
    }
    this.button.disabled = true;
    var done = 0, failed = 0;
    (function next(i) {  // one at a time: on a slow line each file gets the whole bandwidth
      if (i >= accepted.length) {
        self.button.disabled = false;
        if (done) {
          if (self.description) self.description.value = "";
          flash("success", done === 1 ? t("File attached.") : t("%(n)s files attached.", { n: done }));
        }
        if (failed || done < files.length) {
          self.fieldError(done ? t("Some files were not attached; see each file below.")
                               : t("The file was not attached; see below."));
        }
        return;
      }
      self.send(accepted[i].file, description, accepted[i].row, function (ok) {
        if (ok) done += 1; else failed += 1;
        next(i + 1);
      });
    })(0);
  };

  Uploader.prototype.send = function (file, description, row, after) {
    var self = this;
    var xhr = new XMLHttpRequest();
    var body = new FormData();
    body.append("csrf_token", this.box.dataset.csrf);
    body.append("file", file, file.name);
    body.append("description", description);
    var bar = row.querySelector("progress"), status = row.querySelector(".upload-status");
    status.textContent = t("Uploading\u2026");
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) return;
      var pct = Math.round((e.loaded / e.total) * 100);
      bar.value = pct;
      status.textContent = pct < 100 ? t("Uploading %(pct)s", { pct: pct + "%" }) : t("Checking the file\u2026");
    });
    xhr.addEventListener("load", function () {
      uploading -= 1;
      var reply = null;
      try { reply = JSON.parse(xhr.responseText); } catch (e) { reply = null; }
      if (xhr.status === 201 && reply) {
        self.count += 1;
        self.added(reply);
        self.settle(row, true, t("Attached"));
        after(true);
      } else {
        var message = reply && reply.message ? reply.message
          : xhr.status === 413 ? t("%(name)s is larger than the limit of %(limit)s.", { name: file.name, limit: sizeText(self.maxBytes) })
          : t("The upload failed (error %(status)s). Try again.", { status: xhr.status });
        self.settle(row, false, message);
        after(false);
      }
    });
    xhr.addEventListener("error", function () {
      uploading -= 1;
      self.settle(row, false, t("The connection was lost before the file arrived. Try again."));
      after(false);
    });
    xhr.open("POST", this.box.dataset.uploadUrl);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", this.box.dataset.csrf);
    uploading += 1;
    xhr.send(body);
  };

  Uploader.prototype.added = function (item) {
    var card = this.box.closest(".card") || document;
    var grid = card.querySelector(".thumbs");
    if (!grid) {
      grid = el("div", "thumbs");
      var empty = card.querySelector("p.empty");
      var before = card.querySelector("form, .uploader");
      if (empty) empty.replaceWith(grid);
      else if (before && before.parentNode === card) card.insertBefore(grid, before);
      else card.appendChild(grid);
    }
    grid.appendChild(thumb(item));
  };

  Array.prototype.forEach.call(document.querySelectorAll(".uploader"), function (box) {
    if (window.FormData && window.XMLHttpRequest) new Uploader(box);
  });
})();
