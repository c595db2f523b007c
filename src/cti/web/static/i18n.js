// Labels in French first (the floor works in French, in France and Morocco), English second.
window.CTI_I18N = {
  fr: {
    disconnected: "déconnecté", connected: "connecté", pause: "Se mettre en pause", unpause: "Reprendre",
    reason_break: "Pause", reason_lunch: "Déjeuner", reason_training: "Formation", reason_backoffice: "Back-office",
    logout: "Déconnexion", login_title: "Connexion agent", username: "Identifiant", password: "Mot de passe",
    login: "Se connecter", ringing: "Appel entrant", answered: "En communication", no_call: "Aucun appel en cours.",
    ticket: "Ticket", elapsed: "Durée", sla_left: "Reste SLA", category: "Catégorie", notes: "Notes",
    save: "Qualifier", hold: "Mettre en attente", resume: "Reprendre", resolve: "Résoudre", reopen: "Rouvrir",
    click_to_call: "Appeler", call: "Appeler", history: "Historique du client", withheld: "Numéro masqué",
    new_customer: "Nouveau client", create: "Créer la fiche", name: "Nom", several: "Plusieurs clients pour ce numéro : choisissez",
    lookup_unavailable: "Annuaire indisponible", looking_up: "Recherche du client…", available: "Disponible",
    paused: "En pause", open: "ouvert", on_hold: "en attente", resolved: "résolu", bad_login: "Identifiant ou mot de passe incorrect",
    rate_limited: "Trop d'essais, patientez une minute", queue: "File", wait: "Attente", account: "Compte", sla_breached: "SLA dépassé",
  },
  en: {
    disconnected: "disconnected", connected: "connected", pause: "Take a break", unpause: "Back to work",
    reason_break: "Break", reason_lunch: "Lunch", reason_training: "Training", reason_backoffice: "Back office",
    logout: "Log out", login_title: "Agent login", username: "Username", password: "Password",
    login: "Log in", ringing: "Incoming call", answered: "On call", no_call: "No call right now.",
    ticket: "Ticket", elapsed: "Elapsed", sla_left: "SLA left", category: "Category", notes: "Notes",
    save: "Qualify", hold: "Put on hold", resume: "Resume", resolve: "Resolve", reopen: "Reopen",
    click_to_call: "Call", call: "Call", history: "Customer history", withheld: "Number withheld",
    new_customer: "New customer", create: "Create the file", name: "Name", several: "Several customers share this number: pick one",
    lookup_unavailable: "Directory unavailable", looking_up: "Looking the caller up…", available: "Available",
    paused: "Paused", open: "open", on_hold: "on hold", resolved: "resolved", bad_login: "Wrong username or password",
    rate_limited: "Too many attempts, wait a minute", queue: "Queue", wait: "Wait", account: "Account", sla_breached: "SLA breached",
  },
};
