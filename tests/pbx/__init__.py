"""The real-PBX tier (docs/asterisk.md, "The real-PBX test tier")."""
