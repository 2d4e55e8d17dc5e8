"""The live path: stored kills to subscribed sockets, replay, permessage-deflate (entry: `hub.Hub`)."""
