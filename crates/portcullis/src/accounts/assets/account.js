// The accounts' pages: the passkey buttons. Every page works without this
// script except the passkey steps; their buttons stay hidden without it or
// without WebAuthn in the browser. Uses passkeys.js (window.portcullisPasskeys).
(function () {
  "use strict";

  var base = "/.portcullis/account";

  function post(path, body) {
    return fetch(base + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().then(function (json) {
        if (!response.ok) {
          var error = new Error(json.error || "request failed");
          error.code = json.error;
          throw error;
        }
        return json;
      });
    });
  }

  // Shows `text` in the page's status region (or its alert for errors).
  function say(text, isError) {
    var region = document.getElementById("passkey-status");
    if (!region) {
      region = document.createElement("p");
      region.id = "passkey-status";
      region.setAttribute("role", isError ? "alert" : "status");
      document.querySelector("main").appendChild(region);
    }
    region.className = isError ? "error" : "done";
    region.textContent = text;
  }

  // A login with a passkey: the pending login's (second factor), or any
  // passkey (passwordless). The gateway sets the session cookie.
  function login() {
    var rd = new URLSearchParams(window.location.search).get("rd") || "";
    return post("/passkeys/login/start", { rd: rd })
      .then(function (started) {
        return window.portcullisPasskeys.authenticate(started.options).then(function (credential) {
          return post("/passkeys/login/finish", {
            ceremony: started.ceremony,
            credential: credential,
            session: "cookie",
          });
        });
      })
      .then(function (done) {
        window.location.assign(done.redirect || "/");
      })
      .catch(function () {
        say("The passkey was not accepted.", true);
      });
  }

  function register() {
    return post("/passkeys/register/start", {})
      .then(function (started) {
        return window.portcullisPasskeys.register(started.options).then(function (credential) {
          return post("/passkeys/register/finish", { ceremony: started.ceremony, credential: credential });
        });
      })
      .then(function () {
        say("Passkey added.", false);
      })
      .catch(function () {
        say("The passkey could not be added.", true);
      });
  }

  function wire(id, action) {
    var button = document.getElementById(id);
    if (!button || !window.PublicKeyCredential || !window.portcullisPasskeys) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      button.disabled = true;
      action().then(function () {
        button.disabled = false;
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wire("passkey-login", login);
    wire("passkey-second", login);
    wire("passkey-register", register);
  });
})();
