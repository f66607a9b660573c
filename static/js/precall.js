/* Pre-call check: local preview and microphone level, then a WebRTC round trip through
   Huizhen's media worker, which echoes the user's own video and audio back. */
(function () {
  "use strict";
  var root = document.getElementById("precall");
  if (!root) return;
  var localVideo = document.getElementById("local-video");
  var echoVideo = document.getElementById("echo-video");
  var level = document.getElementById("mic-level");
  var deviceStatus = document.getElementById("device-status");
  var startBtn = document.getElementById("start-devices");
  var runBtn = document.getElementById("run-test");
  var status = document.getElementById("test-status");
  var stream = null;
  var pc = null;

  function setCheck(id, text, ok) {
    var el = document.getElementById(id);
    el.textContent = text;
    el.className = ok === true ? "ok" : ok === false ? "bad" : "";
  }

  function meter(s) {
    var tracks = s.getAudioTracks();
    if (!tracks.length || !window.AudioContext) return;
    var ctx = new AudioContext();
    var analyser = ctx.createAnalyser();
    analyser.fftSize = 256;
    ctx.createMediaStreamSource(s).connect(analyser);
    var data = new Uint8Array(analyser.frequencyBinCount);
    (function tick() {
      analyser.getByteTimeDomainData(data);
      var peak = 0;
      for (var i = 0; i < data.length; i++) peak = Math.max(peak, Math.abs(data[i] - 128));
      level.style.width = Math.min(100, Math.round((peak / 128) * 180)) + "%";
      requestAnimationFrame(tick);
    })();
  }

  async function startDevices() {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    } catch (e) {
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        deviceStatus.textContent = t("No camera available: you can still consult with audio only.");
      } catch (e2) {
        deviceStatus.textContent = t("Camera and microphone are blocked or missing: %(error)s. Check the browser's permissions.", { error: e2.name });
        return;
      }
    }
    localVideo.srcObject = stream;
    if (stream.getVideoTracks().length) deviceStatus.textContent = t("Camera and microphone are working. Speak: the bar should move.");
    meter(stream);
    runBtn.disabled = false;
    startBtn.disabled = true;
  }

  function gatheringDone(peer, ms) {
    return new Promise(function (resolve) {
      if (peer.iceGatheringState === "complete") return resolve();
      var timer = setTimeout(resolve, ms);
      peer.addEventListener("icegatheringstatechange", function () {
        if (peer.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  async function relayUsed(peer) {
    var stats = await peer.getStats();
    var pair = null, local = {};
    stats.forEach(function (r) {
      if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
      if (r.type === "local-candidate") local[r.id] = r;
    });
    if (!pair) stats.forEach(function (r) { if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pair = r; });
    if (!pair || !local[pair.localCandidateId]) return null;
    return local[pair.localCandidateId].candidateType === "relay";
  }

  async function runTest() {
    runBtn.disabled = true;
    if (pc) pc.close();
    setCheck("check-connect", t("Connection: connecting…"));
    setCheck("check-rtt", t("Round-trip time: —"));
    setCheck("check-turn", t("Relay (TURN): —"));
    status.textContent = "";
    var started = performance.now();
    try {
      var ice = await (await fetch(root.dataset.iceUrl, { credentials: "same-origin" })).json();
      pc = new RTCPeerConnection({ iceServers: ice.ice_servers });
      stream.getTracks().forEach(function (t) { pc.addTrack(t, stream); });
      var channel = pc.createDataChannel("rtt");
      var rtts = [];
      channel.onmessage = function (e) {
        rtts.push(performance.now() - Number(e.data));
        var sorted = rtts.slice().sort(function (a, b) { return a - b; });
        var median = sorted[Math.floor(sorted.length / 2)];
        setCheck("check-rtt", median > 400 ? t("Round-trip time: %(ms)s ms (slow: prefer audio only)", { ms: Math.round(median) })
                                             : t("Round-trip time: %(ms)s ms", { ms: Math.round(median) }), median <= 400);
      };
      channel.onopen = function () {
        var n = 0;
        var timer = setInterval(function () {
          if (channel.readyState !== "open" || n++ >= 10) { clearInterval(timer); return; }
          channel.send(String(performance.now()));
        }, 500);
      };
      pc.ontrack = function (e) {
        if (!echoVideo.srcObject) echoVideo.srcObject = e.streams[0] || new MediaStream([e.track]);
        else echoVideo.srcObject.addTrack(e.track);
      };
      pc.onconnectionstatechange = async function () {
        if (pc.connectionState === "connected") {
          setCheck("check-connect", t("Connection: connected in %(ms)s ms — you see yourself through the server",
                                       { ms: Math.round(performance.now() - started) }), true);
          var relay = await relayUsed(pc);
          setCheck("check-turn", relay === null ? t("Relay (TURN): unknown")
                                : relay ? t("Relay (TURN): needed — your network blocks direct connections, calls go through the relay")
                                : t("Relay (TURN): not needed"), relay === null ? undefined : true);
          runBtn.disabled = false;
        } else if (pc.connectionState === "failed") {
          setCheck("check-connect", t("Connection: failed — your network may block video calls; ask your coordinator about the TURN relay"), false);
          runBtn.disabled = false;
        }
      };
      await pc.setLocalDescription(await pc.createOffer());
      await gatheringDone(pc, 3000);
      var response = await fetch(root.dataset.offerUrl, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": root.dataset.csrf },
        body: JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp })
      });
      var answer = await response.json();
      if (!response.ok) throw new Error(answer.message || t("The test server refused the connection."));
      await pc.setRemoteDescription(answer);
    } catch (e) {
      setCheck("check-connect", t("Connection: %(error)s", { error: e.message }), false);
      runBtn.disabled = false;
    }
  }

  startBtn.addEventListener("click", startDevices);
  runBtn.addEventListener("click", runTest);
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) startDevices();
  else deviceStatus.textContent = t("This browser cannot use a camera. Use a recent Chrome, Edge or Firefox.");
})();
