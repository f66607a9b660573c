/* Huizhen video call: peer-to-peer WebRTC between the consult's two doctors, signaled through
   the /call Socket.IO namespace with trickle ICE and "perfect negotiation" (the rural doctor is
   the polite peer). ICE servers (STUN/TURN with short-lived credentials) come from Huizhen.
   The call restarts ICE when the network drops, re-negotiates when the other side reloads,
   can fall back to audio only, and reports setup time, relay use and quality to the server.
   It adapts by itself (static/js/adapt.js): audio only while the link is weak, video again once
   it has recovered for a while; video senders are capped for rural links, Opus sends in-band
   FEC and DTX, and each side shows what the other receives. */
(function () {
  "use strict";
  var root = document.getElementById("call");
  if (!root) return;
  var ref = root.dataset.ref;
  var forceRelay = root.dataset.forceRelay === "true";
  var el = function (id) { return document.getElementById(id); };
  var localVideo = el("call-local"), remoteVideo = el("call-remote");
  var statusEl = el("call-status"), peerStateEl = el("call-peer-state"), qualityEl = el("call-quality");
  var joinBtn = el("call-join"), leaveBtn = el("call-leave"), muteBtn = el("call-mute"), camBtn = el("call-camera");
  var audioOnlyBtn = el("call-audio-only"), screenBtn = el("call-screen");
  var camSelect = el("call-camera-select"), micSelect = el("call-mic-select"), unmuteBtn = el("call-unmute");

  var socket = io("/call", { transports: ["websocket", "polling"], reconnectionDelayMax: 4000 });
  var pc = null, polite = root.dataset.polite !== "false", makingOffer = false, ignoreOffer = false, holdOffer = false;
  var iceServers = JSON.parse(root.dataset.iceServers || "[]"), localStream = null, screenTrack = null, inCall = false, joined = false;
  var state = { muted: false, camera: true, audio_only: false, screen: false, auto_audio: false };
  var settings = JSON.parse(root.dataset.settings || "{}");
  var adaptOn = !settings.adapt || settings.adapt.enabled !== false;
  var adapt = null, restarter = null, forced = null;  // adapt.js is fetched when joining (loadAdapt)
  var adaptTimer = null, switching = Promise.resolve(), lastSample = null, lastRecv = null, peerAuto = false;
  var theirViewEl = el("call-their-view");
  var metrics = { joinClickedAt: null, firstRemoteFrameMs: null, connectedMs: null, relayed: null, marks: {} };
  metrics.at = {};  // wall-clock milestones (ms since the epoch), comparable between the two pages
  function mark(name) {
    metrics.at[name] = performance.timeOrigin + performance.now();
    if (metrics.joinClickedAt !== null) metrics.marks[name] = Math.round(performance.now() - metrics.joinClickedAt);
  }
  var statsTimer = null, reportTimer = null, lastBytes = null, lastStatsAt = null, reportedConnected = false;
  window.huizhenCall = { metrics: metrics, state: state, socket: socket, pc: function () { return pc; },
                         adapt: null, settings: settings, restarter: function () { return restarter; },
                         lastSample: function () { return lastSample; } };

  function setStatus(text, kind) { statusEl.textContent = text; statusEl.className = "call-status " + (kind || ""); }
  function signal(payload) {
    payload.ref = ref;
    if (payload.sdp) payload.sdp = opusFmtp(payload.sdp);
    socket.emit("signal", payload);
  }
  function now() { return performance.now() / 1000; }

  // The adaptation logic (static/js/adapt.js, hashed URL in data-adapt-src) is fetched when the
  // doctor joins, alongside the camera: a room visit that never joins the call does not load it.
  var adaptLoading = null;
  function setUpAdapt() {
    if (!adapt) {
      adapt = new HuizhenAdapt.Controller(settings.adapt);
      if (forced) adapt.force(forced);
      window.huizhenCall.adapt = adapt;
    }
    if (!restarter) {
      restarter = new HuizhenAdapt.Restarter(settings.ice);
      if (pc) restarter.change(pc.iceConnectionState, now());
    }
    return adapt;
  }
  function loadAdapt() {
    if (window.HuizhenAdapt) return Promise.resolve(setUpAdapt());
    if (!adaptLoading) {
      adaptLoading = new Promise(function (resolve) {
        var script = document.createElement("script");
        script.src = root.dataset.adaptSrc;
        script.onload = function () { resolve(setUpAdapt()); };
        script.onerror = function () { adaptLoading = null; resolve(null); };  // tried again on the next join
        document.head.appendChild(script);
      });
    }
    return adaptLoading;
  }

  // Opus options in both directions' descriptions: the fmtp a side receives tells its encoder to
  // add in-band FEC (useinbandfec=1) and to send nothing during silence (usedtx=1).
  function opusFmtp(sdp) {
    var opts = settings.opus || { fec: true, dtx: true };
    var want = [];
    if (opts.fec) want.push(["useinbandfec", "1"]);
    if (opts.dtx) want.push(["usedtx", "1"]);
    if (!want.length || typeof sdp !== "string") return sdp;
    var eol = sdp.indexOf("\r\n") >= 0 ? "\r\n" : "\n";
    var lines = sdp.split(eol), types = {};
    lines.forEach(function (line) {
      var m = /^a=rtpmap:(\d+) opus\/48000/i.exec(line);
      if (m) types[m[1]] = true;
    });
    var seen = {};
    lines = lines.map(function (line) {
      var m = /^a=fmtp:(\d+) (.*)$/.exec(line);
      if (!m || !types[m[1]]) return line;
      seen[m[1]] = true;
      var params = m[2].split(";").filter(Boolean);
      want.forEach(function (kv) {
        var i = params.findIndex(function (p) { return p.split("=")[0].trim() === kv[0]; });
        if (i >= 0) params[i] = kv[0] + "=" + kv[1]; else params.push(kv[0] + "=" + kv[1]);
      });
      return "a=fmtp:" + m[1] + " " + params.join(";");
    });
    var out = [];
    lines.forEach(function (line) {
      out.push(line);
      var m = /^a=rtpmap:(\d+) opus\/48000/i.exec(line);
      if (m && !seen[m[1]]) out.push("a=fmtp:" + m[1] + " " + want.map(function (kv) { return kv.join("="); }).join(";"));
    });
    return out.join(eol);
  }

  // Caps on what each sender may use, set once a negotiation has given it its encodings.
  function capped(params, kind, withPreference) {
    var video = settings.video || {}, enc = params.encodings[0];
    if (kind === "video") {
      if (video.max_kbps) enc.maxBitrate = video.max_kbps * 1000;
      if (video.scale_down) enc.scaleResolutionDownBy = video.scale_down;
      if (video.max_fps) enc.maxFramerate = video.max_fps;
      enc.priority = enc.networkPriority = "low";
      if (withPreference && video.degradation) params.degradationPreference = video.degradation;
    } else {
      enc.priority = enc.networkPriority = "high";  // the voice goes first on a thin link
    }
    return params;
  }
  var capping = Promise.resolve();
  function applySenderCaps() {  // one at a time: a second setParameters meanwhile would be refused
    capping = capping.then(capSenders, capSenders);
    return capping;
  }
  async function capSenders() {
    if (!pc) return;
    var senders = pc.getSenders();
    for (var i = 0; i < senders.length; i++) {
      var sender = senders[i], kind = sender.track ? sender.track.kind : null;
      if (!kind || !sender.getParameters().encodings || !sender.getParameters().encodings.length) continue;
      try {
        await sender.setParameters(capped(sender.getParameters(), kind, true));
      } catch (e) {  // a browser that does not take the degradation preference: the caps alone
        try { await sender.setParameters(capped(sender.getParameters(), kind, false)); } catch (e2) { console.warn("sender caps", e2); }
      }
    }
  }

  function sendState() { if (joined) socket.emit("state", Object.assign({ ref: ref }, state)); }
  function videoSender() {
    if (!pc) return null;
    var video = pc.getTransceivers().filter(function (t) { return t.receiver.track && t.receiver.track.kind === "video" && !t.stopped; });
    return pc.getTransceivers().map(function (t) { return t.sender; })
      .filter(function (s) { return s.track ? s.track.kind === "video" : false; })[0] ||
      video.filter(function (t) { return t.mid !== null; }).concat(video).map(function (t) { return t.sender; })[0] || null;
  }

  async function getMedia() {
    var constraints = {
      audio: micSelect.value ? { deviceId: { exact: micSelect.value } } : true,
      video: state.audio_only ? false : (camSelect.value ? { deviceId: { exact: camSelect.value } } : { width: { ideal: 640 }, height: { ideal: 480 } })
    };
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (e) {
      if (constraints.video) {  // no camera: carry on with audio only
        state.audio_only = true;
        return navigator.mediaDevices.getUserMedia({ audio: constraints.audio });
      }
      throw e;
    }
  }

  async function listDevices() {
    var devices = await navigator.mediaDevices.enumerateDevices();
    [[camSelect, "videoinput"], [micSelect, "audioinput"]].forEach(function (pair) {
      var select = pair[0], current = select.value;
      select.textContent = "";
      devices.filter(function (d) { return d.kind === pair[1]; }).forEach(function (d, i) {
        var opt = document.createElement("option");
        opt.value = d.deviceId;
        opt.textContent = d.label || (pair[1] === "videoinput" ? t("Camera %(n)s", { n: i + 1 }) : t("Microphone %(n)s", { n: i + 1 }));
        select.appendChild(opt);
      });
      if (current) select.value = current;
    });
  }

  // offer: whether this side starts the negotiation. The side that joins later offers; the side
  // already waiting (or told that the peer came back) recreates its connection and answers.
  function newPeerConnection(offer) {
    holdOffer = !offer;
    if (pc) { pc.onicecandidate = pc.ontrack = pc.onnegotiationneeded = pc.oniceconnectionstatechange = pc.onconnectionstatechange = null; pc.close(); }
    reportedConnected = false;
    metrics.firstRemoteFrameMs = null;
    pc = new RTCPeerConnection({ iceServers: iceServers, iceTransportPolicy: forceRelay ? "relay" : "all" });
    restarter = window.HuizhenAdapt ? new HuizhenAdapt.Restarter(settings.ice) : null;
    lastRecv = null;
    localStream.getTracks().forEach(function (t) { pc.addTrack(t, localStream); });
    pc.onnegotiationneeded = async function () {
      if (holdOffer) { holdOffer = false; return; }
      try {
        makingOffer = true;
        await pc.setLocalDescription();
        signal({ type: pc.localDescription.type, sdp: pc.localDescription.sdp });
        mark("offer_sent");
      } catch (e) { console.warn("negotiation failed", e); } finally { makingOffer = false; }
    };
    pc.onicecandidate = function (e) { signal({ type: "candidate", candidate: e.candidate ? e.candidate.toJSON() : null }); };
    pc.ontrack = function (e) {
      mark("track");
      var stream = e.streams[0] || new MediaStream([e.track]);
      if (remoteVideo.srcObject !== stream) remoteVideo.srcObject = stream;
      playRemote();
      watchFirstFrame();
    };
    pc.onsignalingstatechange = function () { if (pc && pc.signalingState === "stable") applySenderCaps(); };
    // A dropped link comes back by itself: ICE restarts at once on "failed", after a grace period
    // on "disconnected", and again while it stays down (the restart offer goes through the usual
    // signaling; perfect negotiation settles two restarts crossing).
    pc.oniceconnectionstatechange = function () {
      var s = pc.iceConnectionState;
      if (s === "failed") setStatus(t("Connection lost — reconnecting…"), "warn");
      else if (s === "disconnected") setStatus(t("Connection unstable — reconnecting…"), "warn");
      if (s === "disconnected" || s === "failed") checkSignaling();
      if (restarter ? restarter.change(s, now()) : s === "failed") restartIce();
    };
    pc.onconnectionstatechange = function () {
      if (pc.connectionState === "connected") {
        mark("connected");
        setStatus(t("Connected"), "ok");
        if (!reportedConnected) { reportedConnected = true; metrics.connectedMs = performance.now() - metrics.joinClickedAt; reportStats(true); }
      }
    };
  }

  function restartIce() {
    if (!pc || !inCall) return;
    metrics.iceRestarts = (metrics.iceRestarts || 0) + 1;
    mark("ice_restart");
    holdOffer = false;  // a restart is never the initial negotiation that a waiting side leaves to the other
    pc.restartIce();
    checkSignaling();
  }

  // A link that changed address leaves the signaling WebSocket on the old one: it still looks
  // connected, but nothing gets through until its ping timeout (45 s), and an ICE restart's offer
  // must get through. So when the media path breaks (nothing received for a second, ICE
  // disconnected or failed, a restart), the server is asked for an ack; without one in 5 s the
  // socket is closed and socket.io-client reconnects it (from the new address).
  var probing = false;
  function checkSignaling() {
    if (probing || !joined || !socket.connected) return;
    probing = true;
    var engine = socket.io.engine;
    socket.timeout(5000).emit("state", Object.assign({ ref: ref }, state), function (err) {
      probing = false;
      if (err && socket.io.engine === engine && socket.connected) { mark("signaling_reset"); engine.close(); }
    });
  }
  // Signaling is back (ours or the other side's): an offer of ours sent meanwhile may have been
  // lost, so it goes again (perfect negotiation settles two that cross); with no negotiation
  // under way and the media still down, ICE restarts now rather than at the next retry.
  function renegotiateAfterGap() {
    if (!pc || !inCall || !joined) return;
    if (pc.signalingState === "have-local-offer" && pc.localDescription) signal({ type: "offer", sdp: pc.localDescription.sdp });
    else if (pc.signalingState === "stable" && ["connected", "completed"].indexOf(pc.iceConnectionState) < 0) restartIce();
  }
  window.huizhenCall.restartIce = restartIce;

  // --- adapting to the link -----------------------------------------------------------------
  // Once a second: what the link allows this side to send (adapt.js decides), and what we receive
  // from the other side (told to them, every few seconds, in the call state).
  async function sample() {
    var stats = await pc.getStats(), pair = null, s = { t: now(), kbps: null, loss_pct: null, rtt_ms: null, jitter_ms: null };
    var recv = { at: now(), videoBytes: 0, audioBytes: 0, height: 0, frames: 0 };
    stats.forEach(function (r) { if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
    if (!pair) stats.forEach(function (r) { if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pair = r; });
    if (pair) {
      if (typeof pair.availableOutgoingBitrate === "number") s.kbps = pair.availableOutgoingBitrate / 1000;
      if (typeof pair.currentRoundTripTime === "number") s.rtt_ms = pair.currentRoundTripTime * 1000;
    }
    stats.forEach(function (r) {
      // Only what we are sending now: the video's last receiver report stays in the stats after
      // video stopped and would hold its old loss for ever.
      if (r.type === "remote-inbound-rtp" && (r.kind === "audio" || !state.audio_only)) {
        if (typeof r.fractionLost === "number") s.loss_pct = Math.max(s.loss_pct || 0, r.fractionLost * 100);
        if (typeof r.jitter === "number") s.jitter_ms = Math.max(s.jitter_ms || 0, r.jitter * 1000);
        if (s.rtt_ms === null && typeof r.roundTripTime === "number") s.rtt_ms = r.roundTripTime * 1000;
      }
      if (r.type === "inbound-rtp" && r.kind === "video") { recv.videoBytes += r.bytesReceived || 0; recv.frames += r.framesDecoded || 0; recv.height = Math.max(recv.height, r.frameHeight || 0); }
      if (r.type === "inbound-rtp" && r.kind === "audio") recv.audioBytes += r.bytesReceived || 0;
    });
    return { link: s, recv: recv };
  }

  var recvReported = null, recvSentAt = 0;
  function reportReceiving(recv) {
    var prev = lastRecv;
    lastRecv = recv;
    if (!prev || recv.at - prev.at <= 0) return;
    var secs = recv.at - prev.at, video = recv.frames > prev.frames;
    var rate = function (bytes) { return Math.min(100000, Math.max(0, Math.round(bytes * 8 / secs / 1000))); };  // the server takes 0…100000
    var report = { recv_height: video ? Math.min(recv.height, 100000) : 0,
                   recv_kbps: video ? rate(recv.videoBytes - prev.videoBytes) : 0,
                   recv_audio_kbps: rate(recv.audioBytes - prev.audioBytes) };
    var changed = !recvReported || recvReported.recv_height !== report.recv_height ||
      Math.abs(recvReported.recv_kbps - report.recv_kbps) > Math.max(20, recvReported.recv_kbps * 0.2);
    if (!changed && recv.at - recvSentAt < 10) return;  // a change at once, else every 10 s
    if (changed && recv.at - recvSentAt < 2) return;     // at most one report in 2 s
    recvReported = report; recvSentAt = recv.at;
    Object.assign(state, report);
    sendState();
  }

  async function adaptTick() {
    if (restarter && restarter.tick(now())) restartIce();
    if (!pc || !joined || pc.connectionState !== "connected") return;
    var got;
    try { got = await sample(); } catch (e) { return; }
    lastSample = got.link;
    // Not a byte from the other side since the last sample (audio flows even in silence, DTX
    // sends comfort noise): the link is down, not weak; the stats would only repeat stale reports.
    var silent = lastRecv && got.recv.audioBytes === lastRecv.audioBytes && got.recv.videoBytes === lastRecv.videoBytes;
    reportReceiving(got.recv);
    if (silent) checkSignaling();  // the first sign of a drop or a changed address, before ICE's own
    if (!adaptOn || !hasCamera || !adapt) return;
    if (silent) { adapt.interrupt(got.link.t); return; }
    var decision = adapt.feed(got.link);
    if (decision.changed) switchTo(decision.mode, decision.reason);
  }

  // Video on or off for this side, by the controller or by the user's button; one at a time.
  var hasCamera = true;
  function switchTo(mode, reason) {
    switching = switching.then(function () { return setVideo(mode === "video", reason); }).catch(function (e) { console.warn("switch failed", e); });
    return switching;
  }
  async function setVideo(on, reason) {
    if (on === !state.audio_only && !(on && localStream && !localStream.getVideoTracks().length)) { announce(reason); return; }
    var sender = videoSender();
    if (!on) {
      if (screenTrack) await stopSharing();
      sender = videoSender();
      if (sender) await sender.replaceTrack(null);
      if (localStream) localStream.getVideoTracks().forEach(function (tr) { tr.stop(); localStream.removeTrack(tr); });
      state.audio_only = true;
    } else {
      state.audio_only = false;  // getMedia asks for the camera again
      var fresh = await getMedia();
      var track = fresh.getVideoTracks()[0];
      if (!track) { hasCamera = false; announce(null); return; }  // the camera went away meanwhile
      if (localStream) {
        track.enabled = state.camera;
        localStream.addTrack(track);
        if (sender) {
          // A connection built while on audio only has a receive-only video transceiver: it must
          // send again (a renegotiation), in the same stream as the audio.
          var tr = pc.getTransceivers().filter(function (x) { return x.sender === sender; })[0];
          if (tr && (tr.direction === "recvonly" || tr.direction === "inactive")) { holdOffer = false; tr.direction = "sendrecv"; }
          if (sender.setStreams) sender.setStreams(localStream);
          await sender.replaceTrack(track);
        } else if (pc) pc.addTrack(track, localStream);
        await applySenderCaps();
      }
      fresh.getAudioTracks().forEach(function (tr) { tr.stop(); });
    }
    announce(reason);
  }
  function announce(reason) {
    localVideo.classList.toggle("no-video", state.audio_only);
    state.auto_audio = state.audio_only && forced === null;
    audioOnlyBtn.textContent = state.audio_only ? t("Turn video back on") : t("Audio only");
    if (reason === "weak") setStatus(t("Weak connection — switched to audio only"), "warn");
    else if (reason === "recovered") setStatus(t("Connection recovered — video back on"), "ok");
    else if (reason === "forced" && pc && pc.connectionState === "connected") setStatus(t("Connected"), "ok");
    sendState();
    reportStats(false);
  }

  // After a reload there has been no click yet, and browsers may refuse to autoplay sound: then
  // (and only then: play() rejected with NotAllowedError) play the picture muted and offer a
  // button to turn the sound on. It stays offered while the sound is off and there is a picture.
  var soundBlocked = false;
  function showUnmute() { unmuteBtn.hidden = !(soundBlocked && remoteVideo.srcObject); }
  function playRemote() {
    var attempt = remoteVideo.play();
    if (!attempt) return;
    attempt.then(showUnmute, function (e) {
      if (!e || e.name !== "NotAllowedError") return;  // e.g. AbortError: a newer stream replaced this one
      soundBlocked = true;
      remoteVideo.muted = true;
      remoteVideo.play().catch(function () {});
      showUnmute();
    });
  }
  window.huizhenCall.playRemote = playRemote;  // the browser tests play a stream of their own through it
  unmuteBtn.addEventListener("click", function () {
    soundBlocked = false;
    remoteVideo.muted = false;
    remoteVideo.play().catch(function () {});
    showUnmute();
  });

  function watchFirstFrame() {
    if (metrics.firstRemoteFrameMs !== null || !remoteVideo.requestVideoFrameCallback) return;
    remoteVideo.requestVideoFrameCallback(function () {
      if (metrics.firstRemoteFrameMs === null && metrics.joinClickedAt !== null) { metrics.firstRemoteFrameMs = performance.now() - metrics.joinClickedAt; mark("first_frame"); }
      remoteVideo.classList.add("live");
    });
  }

  // Through coturn: our end of the pair is a relay candidate, or theirs is (behind a symmetric NAT
  // one side may reach the other's relay address straight from its own mapping).
  async function relayInUse() {
    var stats = await pc.getStats(), pair = null;
    stats.forEach(function (r) { if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
    var local = pair && stats.get(pair.localCandidateId), remote = pair && stats.get(pair.remoteCandidateId);
    if (!local) return null;
    return local.candidateType === "relay" || (!!remote && remote.candidateType === "relay");
  }

  async function quality() {
    if (!pc || pc.connectionState !== "connected") return null;
    var stats = await pc.getStats(), rtt = null, lost = 0, received = 0, bytes = 0;
    stats.forEach(function (r) {
      if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime !== undefined) rtt = r.currentRoundTripTime * 1000;
      if (r.type === "inbound-rtp") { lost += r.packetsLost || 0; received += r.packetsReceived || 0; bytes += r.bytesReceived || 0; }
    });
    var now = performance.now(), kbps = null;
    if (lastBytes !== null) kbps = ((bytes - lastBytes) * 8) / (now - lastStatsAt);
    lastBytes = bytes; lastStatsAt = now;
    var loss = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
    return { rtt_ms: rtt === null ? null : Math.round(rtt), packet_loss_pct: Math.round(loss * 10) / 10, bitrate_kbps: kbps === null ? null : Math.round(kbps) };
  }

  async function showQuality() {
    var q = await quality();
    if (!q) return;
    var bad = (q.rtt_ms || 0) > 600 || q.packet_loss_pct > 8;
    var fair = (q.rtt_ms || 0) > 250 || q.packet_loss_pct > 2;
    qualityEl.className = "call-quality " + (bad ? "bad" : fair ? "fair" : "good");
    // "Good · 42 ms · loss 0.5% · 900 kbit/s · via relay": each figure its own msgid
    var parts = [bad ? t("Poor") : fair ? t("Fair") : t("Good"),
                 q.rtt_ms === null ? "—" : t("%(ms)s ms", { ms: q.rtt_ms }),
                 t("loss %(pct)s", { pct: q.packet_loss_pct + "%" })];
    if (q.bitrate_kbps !== null) parts.push(t("%(kbps)s kbit/s", { kbps: q.bitrate_kbps }));
    if (metrics.relayed) parts.push(t("via relay"));
    var summary = parts.join(" · ");
    qualityEl.textContent = bad && !state.audio_only ? t("%(quality)s — try audio only", { quality: summary }) : summary;
  }

  async function reportStats(connected) {
    if (!pc) return;
    var q = (await quality()) || {};
    metrics.relayed = await relayInUse();
    var payload = { ref: ref, connected: !!connected, relayed: metrics.relayed === null ? undefined : metrics.relayed, audio_only: state.audio_only };
    if (connected) payload.setup_ms = Math.round(metrics.connectedMs);
    ["rtt_ms", "packet_loss_pct", "bitrate_kbps"].forEach(function (k) { if (q[k] !== null && q[k] !== undefined) payload[k] = q[k]; });
    socket.emit("stats", payload);
  }

  async function join() {
    joinBtn.disabled = true;
    metrics.joinClickedAt = performance.now();
    loadAdapt();
    setStatus(t("Starting camera and microphone…"));
    try {
      if (!localStream) {
        var wanted = !state.audio_only;
        localStream = await getMedia(); localVideo.srcObject = localStream; listDevices();
        if (wanted && !localStream.getVideoTracks().length) hasCamera = false;  // nothing to adapt
        localVideo.classList.toggle("no-video", !localStream.getVideoTracks().length);
      }
    } catch (e) {
      setStatus(t("Camera and microphone are not available: %(error)s. Check the browser's permissions.", { error: e.name }), "bad");
      joinBtn.disabled = false;
      return;
    }
    mark("media");
    inCall = true;
    sessionStorage.setItem("huizhen-call-" + ref, "1");
    root.classList.add("in-call");
    await sendJoin();
  }

  // Join and offer in one message: the server tells the other doctor we are here, then hands
  // over our offer, so setting up the call costs no extra round trip. (Events from one client
  // are handled in order on the server, so our ICE candidates follow the offer.)
  async function sendJoin() {
    // One join at a time: while the signaling socket is down (a click during a network drop)
    // the "connect" handler below sends the join; emitting here too would queue a second one,
    // and the other side would set up the call twice.
    if (!socket.connected) return;
    newPeerConnection(false);
    // Without a camera (or on audio only) our offer still asks for the other side's video. Only
    // an offer needs this: an answering connection gets its video transceiver from the offer
    // (one added beforehand would not be matched to the offer's video and would stay unused).
    if (!localStream.getVideoTracks().length) pc.addTransceiver("video", { direction: "recvonly" });
    var offer = null;
    try {
      await pc.setLocalDescription();
      offer = { type: pc.localDescription.type, sdp: opusFmtp(pc.localDescription.sdp) };
    } catch (e) { console.warn("could not create an offer", e); }
    mark("offer_sent");
    var offered = pc;
    socket.timeout(15000).emit("join", { ref: ref, offer: offer }, function (err, ack) {
      if (!inCall || joined) return;  // hung up meanwhile, or already joined
      if (HuizhenLive.retryable(err, ack)) {  // not refused, only not done: join again, backing off
        live.later(t("Could not join the call"), function () { if (inCall && !joined) sendJoin(); });
        return;
      }
      if (!ack.ok) { refused(ack); return; }
      mark("joined");
      live.joined();
      joined = true;
      polite = ack.polite;
      iceServers = ack.ice_servers;  // fresh TURN credentials for later ICE restarts
      try { pc.setConfiguration({ iceServers: iceServers, iceTransportPolicy: forceRelay ? "relay" : "all" }); } catch (e) { /* unchanged */ }
      // Nobody was in the call to take the offer sent with this join: wait with a fresh
      // connection, which answers at once when the other doctor joins and offers (peer-joined
      // keeps it); rebuilding it only then would hold the page up just as their offer arrives.
      // If their offer already came, peer-joined has replaced `offered` and this does nothing.
      if (!ack.peers.length && pc === offered && !pc.remoteDescription) newPeerConnection(false);
      sendState();
      if (pc.connectionState !== "connected") setStatus(ack.peers.length ? t("Connecting…") : t("Waiting for the other doctor to join…"));
      clearInterval(statsTimer);
      statsTimer = setInterval(function () { showQuality(); }, 2000);
      clearInterval(adaptTimer);
      adaptTimer = setInterval(adaptTick, 1000);
      clearInterval(reportTimer);
      reportTimer = setInterval(function () { if (pc && pc.connectionState === "connected") reportStats(false); }, 15000);
    });
  }

  // The server refused the join (no longer a participant, the call closed): out of the call, saying why.
  function refused(ack) {
    inCall = false;
    sessionStorage.removeItem("huizhen-call-" + ref);
    root.classList.remove("in-call");
    if (pc) { pc.close(); pc = null; }
    setStatus((ack && ack.message) || t("You cannot join this call."), "bad");
    joinBtn.disabled = false;
  }

  function hangUp() {
    inCall = false; joined = false;
    sessionStorage.removeItem("huizhen-call-" + ref);
    signal({ type: "bye" });
    socket.emit("leave", { ref: ref });
    if (pc) { pc.close(); pc = null; }
    if (localStream) { localStream.getTracks().forEach(function (t) { t.stop(); }); localStream = null; }
    if (screenTrack) { screenTrack.onended = null; screenTrack.stop(); screenTrack = null; }
    state.screen = false; screenBtn.textContent = t("Share screen");
    localVideo.srcObject = null; remoteVideo.srcObject = null; remoteVideo.classList.remove("live", "peer-audio-only");
    showUnmute();
    clearInterval(statsTimer);
    clearInterval(adaptTimer);
    theirViewEl.textContent = "";
    root.classList.remove("in-call");
    joinBtn.disabled = false;
    setStatus(t("You left the call."));
  }

  socket.on("signal", async function (msg) {
    if (!pc) return;
    try {
      if (msg.type === "offer" || msg.type === "answer") {
        mark(msg.type + "_received");
        var collision = msg.type === "offer" && (makingOffer || pc.signalingState !== "stable");
        ignoreOffer = !polite && collision;
        if (ignoreOffer) return;
        await pc.setRemoteDescription({ type: msg.type, sdp: opusFmtp(msg.sdp) });
        if (msg.type === "offer") {
          holdOffer = false;
          await pc.setLocalDescription();
          signal({ type: pc.localDescription.type, sdp: pc.localDescription.sdp });
          mark("answer_sent");
        }
      } else if (msg.type === "candidate") {
        try { await pc.addIceCandidate(msg.candidate || null); } catch (e) { if (!ignoreOffer) console.warn(e); }
      } else if (msg.type === "bye") {
        remoteVideo.srcObject = null; remoteVideo.classList.remove("live", "peer-audio-only"); showUnmute();
        setStatus(t("The other doctor left the call. You can wait here; they can rejoin."));
        newPeerConnection(false);
      }
    } catch (e) { console.warn("signal handling failed", e); }
  });
  socket.on("peer-joined", function () {
    if (!inCall || !localStream) return;
    setStatus(t("The other doctor joined — connecting…"));
    // They offer; we answer. A connection that has not negotiated yet (we were waiting) is
    // ready to answer as it is: building a new one would hold the page up just as the offer
    // arrives. Any other (they reloaded or reconnected) is replaced.
    if (pc && !pc.localDescription && !pc.remoteDescription && pc.signalingState === "stable") return;
    newPeerConnection(false);
  });
  socket.on("peer-resumed", function () {
    // The other doctor's signaling came back and they kept the call: nothing to rebuild.
    if (!inCall) return;
    if (pc && pc.connectionState === "connected") setStatus(t("Connected"), "ok");
    renegotiateAfterGap();
  });
  socket.on("peer-left", function (data) {
    if (!inCall) return;
    peerStateEl.textContent = "";
    remoteVideo.classList.remove("live");
    if (data && data.reason === "hung_up") {
      remoteVideo.srcObject = null; remoteVideo.classList.remove("peer-audio-only"); showUnmute();
      setStatus(t("The other doctor left the call. You can wait here; they can rejoin."));
      newPeerConnection(false);
    } else {
      setStatus(t("The other doctor's connection dropped — waiting for them to come back…"), "warn");
    }
  });
  socket.on("peer-state", function (s) {
    var parts = [];
    if (s.muted) parts.push(t("muted"));
    if (s.camera === false || s.audio_only) parts.push(!s.audio_only ? t("camera off") : s.auto_audio ? t("audio only (weak connection)") : t("audio only"));
    if (s.screen) parts.push(t("sharing screen"));
    if (s.reconnecting) parts.push(t("reconnecting"));
    // Translators: the separator between the other doctor's states ("muted, sharing screen")
    var separator = t(", ");
    peerStateEl.textContent = parts.length ? t("Other doctor: %(states)s", { states: parts.join(separator) }) : "";
    peerStateEl.dataset.muted = s.muted ? "true" : "false";
    remoteVideo.classList.toggle("peer-audio-only", !!s.audio_only);
    // The other side's link chose audio only, or video again: said on our status line too,
    // unless our own link has just said the same of us.
    var auto = !!(s.audio_only && s.auto_audio);
    if (auto !== peerAuto && !state.auto_audio) {
      if (auto) setStatus(t("The other doctor's connection is weak — their video is paused, audio continues"), "warn");
      else if (!s.audio_only) setStatus(t("The other doctor's video is back on"), "ok");
    }
    peerAuto = auto;
    // What they receive from us, as they measured it.
    if (typeof s.recv_height === "number") {
      theirViewEl.textContent = s.recv_height > 0
        ? t("They receive: video %(height)sp · ~%(kbps)s kbit/s", { height: s.recv_height, kbps: s.recv_kbps })
        : t("They receive: audio only · ~%(kbps)s kbit/s", { kbps: s.recv_audio_kbps || 0 });
    }
  });
  // Reconnect after a refused connect and retry a failed join, with backoff (static/js/live.js).
  var live = HuizhenLive.keep(socket, function (kind, text) { if (inCall) setStatus(text, "warn"); });
  socket.on("connect", function () {
    if (!inCall || joined) return;
    // The signaling connection came back. A call that was negotiated is kept (the media may
    // have held through the drop, or its ICE restart is under way): rejoin without a new
    // connection, so neither side tears down what works. Otherwise rejoin and renegotiate.
    if (pc && pc.remoteDescription && ["connected", "connecting", "disconnected"].indexOf(pc.connectionState) >= 0) resumeJoin();
    else sendJoin();
  });
  function resumeJoin() {
    var kept = pc;
    socket.timeout(15000).emit("join", { ref: ref, resume: true }, function (err, ack) {
      if (!inCall || joined) return;
      if (HuizhenLive.retryable(err, ack)) {
        live.later(t("Could not join the call"), function () { if (inCall && !joined) resumeJoin(); });
        return;
      }
      if (!ack.ok) { refused(ack); return; }
      mark("resumed");
      joined = true;
      polite = ack.polite;
      iceServers = ack.ice_servers;
      try { pc.setConfiguration({ iceServers: iceServers, iceTransportPolicy: forceRelay ? "relay" : "all" }); } catch (e) { /* unchanged */ }
      sendState();
      if (!ack.peers.length) return;  // they are away too: their return sends peer-resumed or peer-joined
      renegotiateAfterGap();
      // The kept connection must come back by itself (its ICE restart, retried every 5, 10, 20 s);
      // if it has not within 20 s, or it failed for good (the other side rebuilt theirs
      // meanwhile), set the call up anew.
      setTimeout(function () {
        if (inCall && joined && pc === kept && pc.connectionState !== "connected") { joined = false; sendJoin(); }
      }, 20000);
    });
  }
  socket.on("disconnect", function () { joined = false; });

  muteBtn.addEventListener("click", function () {
    state.muted = !state.muted;
    if (localStream) localStream.getAudioTracks().forEach(function (t) { t.enabled = !state.muted; });
    muteBtn.textContent = state.muted ? t("Unmute") : t("Mute");
    muteBtn.setAttribute("aria-pressed", state.muted);
    sendState();
  });
  camBtn.addEventListener("click", function () {
    state.camera = !state.camera;
    if (localStream) localStream.getVideoTracks().forEach(function (t) { t.enabled = state.camera; });
    camBtn.textContent = state.camera ? t("Camera off") : t("Camera on");
    sendState();
  });
  // The user's choice wins over the link's for the rest of the call.
  audioOnlyBtn.addEventListener("click", function () {
    forced = state.audio_only ? "video" : "audio";
    if (adapt) adapt.force(forced);
    switchTo(forced, "forced");
  });
  // Back to the camera, whether sharing ends by our button or by the browser's own "Stop sharing"
  // bar: track.stop() fires no "ended" event, so the button cannot rely on onended. The sender is
  // looked up now (the connection may have been rebuilt while sharing), and the other side's video
  // carries the camera again without a renegotiation (replaceTrack).
  async function stopSharing() {
    if (!screenTrack) return;
    var track = screenTrack;
    screenTrack = null; track.onended = null; track.stop();
    state.screen = false; screenBtn.textContent = t("Share screen");
    var sender = videoSender();
    var cam = localStream && localStream.getVideoTracks()[0];
    try { if (sender) await sender.replaceTrack(cam || null); } catch (e) { console.warn("back to the camera failed", e); }
    sendState();
  }
  screenBtn.addEventListener("click", async function () {
    if (screenTrack) { await stopSharing(); return; }
    var sender = videoSender();
    if (!sender) return;
    try {
      var display = await navigator.mediaDevices.getDisplayMedia({ video: true });
      screenTrack = display.getVideoTracks()[0];
      screenTrack.onended = stopSharing;
      await sender.replaceTrack(screenTrack);
      state.screen = true; screenBtn.textContent = t("Stop sharing"); sendState();
    } catch (e) { setStatus(t("Screen sharing was not started: %(error)s", { error: e.name }), "warn"); }
  });
  [camSelect, micSelect].forEach(function (select) {
    select.addEventListener("change", async function () {
      if (!localStream) return;
      var kind = select === camSelect ? "video" : "audio";
      var fresh = await navigator.mediaDevices.getUserMedia(kind === "video" ? { video: { deviceId: { exact: select.value } } } : { audio: { deviceId: { exact: select.value } } });
      var track = kind === "video" ? fresh.getVideoTracks()[0] : fresh.getAudioTracks()[0];
      var old = kind === "video" ? localStream.getVideoTracks()[0] : localStream.getAudioTracks()[0];
      if (old) { localStream.removeTrack(old); old.stop(); }
      localStream.addTrack(track);
      if (kind === "audio") track.enabled = !state.muted;
      var sender = pc && pc.getSenders().filter(function (s) { return s.track === old || (s.track && s.track.kind === kind); })[0];
      if (sender) await sender.replaceTrack(track);
      localVideo.srcObject = localStream;
    });
  });
  joinBtn.addEventListener("click", join);
  leaveBtn.addEventListener("click", hangUp);
  window.addEventListener("online", function () { if (pc && inCall) { setStatus(t("Network back — reconnecting…"), "warn"); restartIce(); } });
  // A new address (another network, a new carrier NAT mapping): the old candidate pair is gone.
  if (navigator.connection && navigator.connection.addEventListener) {
    navigator.connection.addEventListener("change", function () { if (pc && inCall && joined) restartIce(); });
  }
  if (sessionStorage.getItem("huizhen-call-" + ref)) join();  // a reload re-establishes the call
})();
