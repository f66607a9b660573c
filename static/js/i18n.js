/* Huizhen: the scripts' words in the page's language.
 *
 * Served with the page's catalog in front of it, as one script every page loads first
 * (/i18n/<locale>.js, domain "js", cached for a year under its version): window.HZ_CATALOG. t(msgid, params)
 * returns the translation, or the English msgid when there is none, with %(name)s filled in.
 * Dates and times: fmtTime / fmtDateTime in the page's language and the viewer's own zone
 * (<html data-tz>), as the server formats them.
 */
(function () {
  "use strict";
  var catalog = window.HZ_CATALOG || {};
  var lang = document.documentElement.lang || "en";

  function t(msgid, params) {
    var text = Object.prototype.hasOwnProperty.call(catalog, msgid) ? catalog[msgid] : msgid;
    if (params) {
      text = text.replace(/%\((\w+)\)s/g, function (whole, name) {
        return Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole;
      });
    }
    return text;
  }

  function zone() {
    return document.documentElement.getAttribute("data-tz") || undefined;
  }

  function fmtTime(value) {
    var d = value instanceof Date ? value : new Date(value);
    if (isNaN(d.getTime())) return "";
    try {
      return new Intl.DateTimeFormat(lang, {hour: "2-digit", minute: "2-digit", hour12: false,
                                            timeZone: zone()}).format(d);
    } catch (e) {
      return d.toISOString().slice(11, 16);
    }
  }

  function fmtDateTime(value) {
    var d = value instanceof Date ? value : new Date(value);
    if (isNaN(d.getTime())) return "";
    try {
      return new Intl.DateTimeFormat(lang, {year: "numeric", month: "short", day: "numeric", weekday: "short",
                                            hour: "2-digit", minute: "2-digit", hour12: false,
                                            timeZone: zone()}).format(d);
    } catch (e) {
      return d.toISOString().slice(0, 16).replace("T", " ");
    }
  }

  window.t = t;
  window.HZ = window.HZ || {};
  window.HZ.lang = lang;
  window.HZ.fmtTime = fmtTime;
  window.HZ.fmtDateTime = fmtDateTime;
})();
