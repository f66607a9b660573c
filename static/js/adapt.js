/* Huizhen call adaptation: pure decision logic, no DOM and no WebRTC, so the tests can feed it
   synthetic samples (tests/browser/test_call_adapt.py). call.js feeds it getStats samples.

   HuizhenAdapt.Controller(settings) decides whether this side sends video or only audio.
   feed({t, kbps, loss_pct, rtt_ms, jitter_ms}) once a second (t in seconds; a figure the browser
   did not report is null) returns {mode: "video"|"audio", changed, reason}:
   - on video, a sample is weak when the outgoing bitrate estimate is under min_kbps, or loss,
     round trip or jitter is over its maximum; down_seconds of weak samples in a row switch to
     audio ("weak"). One good sample restarts the count: a short dip changes nothing.
   - on audio, a sample is good when loss is at most half its maximum and round trip and jitter
     at most 80 % of theirs. The bitrate estimate is not judged there: with only audio flowing the
     browser does not probe the link, so it stays low. up_seconds of good samples in a row bring
     video back ("recovered"). If video then falls again within retry_window seconds, the next
     recovery must hold twice as long (up to max_up_seconds): the call does not flap.
   force("audio"|"video") wins over every automatic decision; force(null) hands back to it.
   interrupt(t) says nothing arrived from the other side (a drop): the run is forgotten and nothing
   is judged for quiet_seconds, so a drop and the climb back after it never switch to audio.

   HuizhenAdapt.Restarter(settings) decides when to restart ICE: change(s, t) on every ICE state
   change and tick(t) once a second return true when to call pc.restartIce(): at once on "failed",
   after grace_seconds of "disconnected", and again every retry_seconds (doubling up to
   max_retry_seconds) while the link is not back. */
(function (root) {
  "use strict";

  var DEFAULTS = {
    min_kbps: 150, max_loss_pct: 10, max_rtt_ms: 1000, max_jitter_ms: 100,
    down_seconds: 4, up_seconds: 15, max_up_seconds: 120, retry_window: 60, quiet_seconds: 10
  };

  function merge(base, extra) {
    var out = {}, k;
    for (k in base) if (Object.prototype.hasOwnProperty.call(base, k)) out[k] = base[k];
    for (k in extra || {}) if (Object.prototype.hasOwnProperty.call(extra, k) && extra[k] !== undefined && extra[k] !== null) out[k] = extra[k];
    return out;
  }
  function known(x) { return typeof x === "number" && isFinite(x); }

  function Controller(settings) {
    this.cfg = merge(DEFAULTS, settings);
    this.auto = "video";       // what the link allows
    this.forced = null;        // the user's choice, if any
    this.runStart = null;      // when the current run of weak (on video) or good (on audio) samples began
    this.upSeconds = this.cfg.up_seconds;
    this.lastRecovery = null;  // when video last came back by itself
    this.history = [];         // [{t, mode, reason}] of automatic switches
    this.quietUntil = null;    // after a drop, nothing is judged before this time
  }

  Controller.prototype.configure = function (settings) {
    this.cfg = merge(this.cfg, settings);
    this.upSeconds = Math.max(this.upSeconds, this.cfg.up_seconds);
    if (settings && known(settings.up_seconds)) this.upSeconds = settings.up_seconds;
  };

  Controller.prototype.weak = function (s) {
    var c = this.cfg;
    return (known(s.kbps) && s.kbps < c.min_kbps) || (known(s.loss_pct) && s.loss_pct > c.max_loss_pct) ||
      (known(s.rtt_ms) && s.rtt_ms > c.max_rtt_ms) || (known(s.jitter_ms) && s.jitter_ms > c.max_jitter_ms);
  };

  Controller.prototype.good = function (s) {
    var c = this.cfg;
    return !(known(s.loss_pct) && s.loss_pct > c.max_loss_pct / 2) && !(known(s.rtt_ms) && s.rtt_ms > c.max_rtt_ms * 0.8) &&
      !(known(s.jitter_ms) && s.jitter_ms > c.max_jitter_ms * 0.8);
  };

  Controller.prototype.mode = function () { return this.forced || this.auto; };

  Controller.prototype.force = function (mode) {
    var before = this.mode();
    this.forced = mode === "audio" || mode === "video" ? mode : null;
    this.runStart = null;
    return { mode: this.mode(), changed: this.mode() !== before, reason: "forced" };
  };

  // Nothing arrived from the other side: a drop, not a weak link (the ICE restart deals with it).
  // The run so far is forgotten and no sample is judged for quiet_seconds after the last such
  // moment, while the congestion control climbs back after the link returns.
  Controller.prototype.interrupt = function (t) {
    this.runStart = null;
    this.quietUntil = t + this.cfg.quiet_seconds;
  };

  Controller.prototype.feed = function (s) {
    var before = this.mode(), reason = null, t = s.t;
    if (this.quietUntil !== null && t < this.quietUntil) return { mode: before, changed: false, reason: null };
    if (this.auto === "video") {
      if (this.weak(s)) {
        if (this.runStart === null) this.runStart = t;
        if (t - this.runStart >= this.cfg.down_seconds) {
          this.auto = "audio"; reason = "weak"; this.runStart = null;
          // Video fell again soon after coming back: the next try waits twice as long.
          if (this.lastRecovery !== null && t - this.lastRecovery <= this.cfg.retry_window) {
            this.upSeconds = Math.min(this.upSeconds * 2, this.cfg.max_up_seconds);
          } else {
            this.upSeconds = this.cfg.up_seconds;
          }
        }
      } else {
        this.runStart = null;
      }
    } else {
      if (this.good(s)) {
        if (this.runStart === null) this.runStart = t;
        if (t - this.runStart >= this.upSeconds) {
          this.auto = "video"; reason = "recovered"; this.runStart = null; this.lastRecovery = t;
        }
      } else {
        this.runStart = null;
      }
    }
    if (reason) this.history.push({ t: t, mode: this.auto, reason: reason });
    var mode = this.mode();
    return { mode: mode, changed: mode !== before, reason: mode !== before ? reason : null };
  };

  function Restarter(settings) {
    this.cfg = merge({ grace_seconds: 3, retry_seconds: 5, max_retry_seconds: 20 }, settings);
    this.state = "new";
    this.due = null;        // when the next restart is due, while the link is down
    this.wait = this.cfg.retry_seconds;
    this.last = null;       // when the last restart was asked for
    this.restarts = 0;
  }

  Restarter.prototype.restart = function (t) {
    this.restarts++; this.last = t;
    this.due = t + this.wait;
    this.wait = Math.min(this.wait * 2, this.cfg.max_retry_seconds);
    return true;
  };
  Restarter.prototype.change = function (s, t) {
    this.state = s;
    if (s === "connected" || s === "completed" || s === "closed" || s === "new") {
      this.due = null; this.wait = this.cfg.retry_seconds;
      return false;
    }
    // "failed": at once, unless a restart was asked for a moment ago (then when the timer says).
    if (s === "failed" && (this.last === null || t - this.last >= 1)) return this.restart(t);
    if (s === "failed" && this.due === null) this.due = t + 1;
    if (s === "disconnected" && this.due === null) this.due = t + this.cfg.grace_seconds;
    return false;  // "checking" (a restart under way) keeps the timer that is running
  };
  Restarter.prototype.tick = function (t) {
    if (this.due === null || t < this.due) return false;
    return this.restart(t);
  };

  root.HuizhenAdapt = { Controller: Controller, Restarter: Restarter, DEFAULTS: DEFAULTS };
})(window);
