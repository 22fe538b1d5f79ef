// The accounts' pages: passkey buttons. Every page works without this
// script except the passkey steps; the buttons stay hidden without it or
// without WebAuthn in the browser.
"use strict";
