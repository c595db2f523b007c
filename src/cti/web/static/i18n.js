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

// The wallboard (wallboard.js): the names supervisors use on the floor (QS, DMC, DMT, Conv ACD).
Object.assign(window.CTI_I18N.fr, {
  wb_title: "Mur d'information", wb_login_title: "Connexion superviseur", wb_refused: "Réservé aux superviseurs",
  wb_to_desktop: "Aller au poste agent", wb_waiting: "Appels en attente", wb_longest: "Attente la plus longue",
  wb_presented: "Présentés", wb_answered: "Décrochés", wb_abandoned: "Abandons", wb_timed_out: "Sorties sur délai",
  wb_qs: "QS", wb_sl: "Niveau de service", wb_sl_short: "NS", wb_asa: "ASA", wb_abandon_rate: "Taux d'abandon",
  wb_dmc: "DMC", wb_dmt: "DMT", wb_chart_calls: "Appels par quart d'heure", wb_chart_sl: "Niveau de service sur la journée",
  wb_sl_interval: "par quart d'heure", wb_sl_day: "cumulé", wb_chart_states: "États des agents", wb_queues: "Files",
  wb_waiting_short: "Attente", wb_longest_short: "Max", wb_agents_short: "Dispo / connectés",
  wb_needed: "Besoin (Erlang C)", wb_breaks: "Pauses possibles", wb_agents: "Agents", wb_agent: "Agent",
  wb_state: "État", wb_since: "Depuis", wb_handled: "Traités", wb_occupancy: "Occupation", wb_ivr: "SVI",
  wb_menu: "Menu", wb_ivr_entries: "Entrées", wb_ivr_choices: "Choix", wb_ivr_invalid: "Invalides",
  wb_ivr_timeouts: "Sans saisie", wb_ivr_hangups: "Raccrochés", wb_ivr_containment: "Rétention",
  st_unavailable: "Injoignable", st_logged_out: "Déconnecté", st_available: "Disponible", st_ringing: "Sonnerie", st_acd: "Conv ACD",
  st_outbound: "Conv sortante", st_wrapup: "Post-appel", st_paused: "Pause",
});
Object.assign(window.CTI_I18N.en, {
  wb_title: "Wallboard", wb_login_title: "Supervisor login", wb_refused: "Supervisors only",
  wb_to_desktop: "Go to the agent desktop", wb_waiting: "Calls waiting", wb_longest: "Longest wait",
  wb_presented: "Presented", wb_answered: "Answered", wb_abandoned: "Abandoned", wb_timed_out: "Timed out",
  wb_qs: "QS (answer rate)", wb_sl: "Service level", wb_sl_short: "SL", wb_asa: "ASA", wb_abandon_rate: "Abandon rate",
  wb_dmc: "DMC (avg talk)", wb_dmt: "DMT (avg handling)", wb_chart_calls: "Calls per quarter hour",
  wb_chart_sl: "Service level through the day", wb_sl_interval: "per quarter hour", wb_sl_day: "day so far",
  wb_chart_states: "Agent states", wb_queues: "Queues", wb_waiting_short: "Waiting", wb_longest_short: "Longest",
  wb_agents_short: "Available / logged in", wb_needed: "Needed (Erlang C)", wb_breaks: "Breaks possible",
  wb_agents: "Agents", wb_agent: "Agent", wb_state: "State", wb_since: "For", wb_handled: "Handled",
  wb_occupancy: "Occupancy", wb_ivr: "IVR", wb_menu: "Menu", wb_ivr_entries: "Entries", wb_ivr_choices: "Choices",
  wb_ivr_invalid: "Invalid", wb_ivr_timeouts: "Timeouts", wb_ivr_hangups: "Hang-ups", wb_ivr_containment: "Containment",
  st_unavailable: "Unreachable", st_logged_out: "Logged out", st_available: "Available", st_ringing: "Ringing", st_acd: "ACD call (Conv ACD)",
  st_outbound: "Outbound call", st_wrapup: "Wrap-up", st_paused: "Paused",
});

// The agent desktop (desktop.js): one language at a time, every string, errors by their id.
Object.assign(window.CTI_I18N.fr, {
  desk_title: "poste agent", call_zone: "Appel", call_controls: "Commandes d'appel", hangup: "Raccrocher",
  transfer: "Transférer", keypad: "Clavier", hold_call: "Mettre en garde", transfer_mode: "Type de transfert",
  blind: "Direct (aveugle)", attended: "Supervisé (consultation)", target_kind: "Vers", target_agent: "un collègue",
  target_queue: "une file", target_number: "un numéro", target: "Destinataire", do_transfer: "Transférer l'appel",
  close: "Fermer", consulting: "Consultation en cours", consult_hint: "Le client patiente. Présentez l'appel, puis transférez ou reprenez-le.",
  complete_transfer: "Terminer le transfert", cancel_transfer: "Annuler, reprendre le client", transferred: "Appel transféré",
  wrapup: "Post-appel", wrapup_hint: "Terminez la fiche et le ticket, puis :", ready: "Prêt", number: "Numéro",
  customer_file: "Fiche client", no_customer: "Pas de client pour l'instant.", my_day: "Ma journée",
  fig_handled: "Appels traités", fig_dmc: "DMC", fig_paused: "Temps de pause", fig_occupancy: "Occupation",
  my_tickets: "Mes tickets ouverts", search_tickets: "Rechercher un ticket…", pause_reason: "Motif de pause",
  st_unknown: "Hors file", reason_wrapup: "Post-appel", reason_pause: "Pause", reason_meeting: "Réunion",
  campaign: "Campagne", ivr: "SVI", phones: "Téléphones", phone: "Téléphone", customer_notes: "Remarques", address: "Adresse",
  dialing: "Appel en cours vers", waiting_calls: "en attente", no_waiting: "Aucun appel en attente dans mes files.",
  consulting_state: "Consultation", cat_none: "à qualifier", cat_information: "Information", cat_incident: "Incident",
  cat_complaint: "Réclamation", cat_order: "Commande", cat_other: "Autre",
  out_answered: "répondu", out_abandoned: "abandonné en attente", out_timeout: "sorti sur délai", out_ivr_only: "resté dans le SVI",
  out_no_queue: "sans file", out_unknown: "issue inconnue", out_outbound: "appel sortant",
  out_no_answer: "pas de réponse", out_busy: "occupé", out_congestion: "réseau saturé", out_failed: "échec", out_rejected: "refusé",
  ticket_qualify: "Ticket qualifié", ticket_hold: "Ticket mis en attente", ticket_resume: "Ticket repris",
  ticket_resolve: "Ticket résolu", ticket_reopen: "Ticket rouvert",
  err_generic: "L'action n'a pas abouti. Réessayez.", "err_no-live-call": "Aucun appel en cours sur votre poste.",
  "err_no-interface": "Aucun poste n'est associé à votre compte.", "err_no-device": "Aucun téléphone n'est associé à votre compte.",
  "err_ami-unavailable": "Le serveur téléphonique ne répond pas.", "err_transfer-refused": "Le transfert a été refusé par le serveur téléphonique.",
  "err_no-such-target": "Destinataire inconnu.", "err_bad-number": "Ce numéro n'est pas valide.",
  "err_dtmf-refused": "La touche n'a pas pu être envoyée.", "err_pause-refused": "Pause refusée : vous n'êtes dans aucune file.",
  "err_call-refused": "L'appel n'a pas pu être lancé.", "err_queue-refused": "File refusée.",
  "err_ticket-not-found": "Ticket introuvable.", "err_ticket-invalid-category": "Catégorie inconnue.",
  "err_ticket-invalid-transition": "Action impossible pour ce ticket.", "err_bad-field": "Champ invalide.",
  "err_call-not-found": "Cet appel n'est plus le vôtre.", "err_directory-unavailable": "Annuaire indisponible.",
  "err_unauthenticated": "Session terminée : reconnectez-vous.",
});
Object.assign(window.CTI_I18N.en, {
  desk_title: "agent desktop", call_zone: "Call", call_controls: "Call controls", hangup: "Hang up",
  transfer: "Transfer", keypad: "Keypad", hold_call: "Hold", transfer_mode: "Transfer type",
  blind: "Blind", attended: "Attended (consult first)", target_kind: "To", target_agent: "a colleague",
  target_queue: "a queue", target_number: "a number", target: "Recipient", do_transfer: "Transfer the call",
  close: "Close", consulting: "Consulting", consult_hint: "The customer is waiting. Introduce the call, then transfer it or take it back.",
  complete_transfer: "Complete the transfer", cancel_transfer: "Cancel, back to the customer", transferred: "Call transferred",
  wrapup: "Wrap-up", wrapup_hint: "Finish the file and the ticket, then:", ready: "Ready", number: "Number",
  customer_file: "Customer file", no_customer: "No customer yet.", my_day: "My day",
  fig_handled: "Calls handled", fig_dmc: "Avg talk (DMC)", fig_paused: "Break time", fig_occupancy: "Occupancy",
  my_tickets: "My open tickets", search_tickets: "Search tickets…", pause_reason: "Break reason",
  st_unknown: "Not in a queue", reason_wrapup: "Wrap-up", reason_pause: "Break", reason_meeting: "Meeting",
  campaign: "Campaign", ivr: "IVR", phones: "Phones", phone: "Phone", customer_notes: "Remarks", address: "Address",
  dialing: "Calling", waiting_calls: "waiting", no_waiting: "No call waiting in my queues.",
  consulting_state: "Consulting", cat_none: "to qualify", cat_information: "Information", cat_incident: "Incident",
  cat_complaint: "Complaint", cat_order: "Order", cat_other: "Other",
  out_answered: "answered", out_abandoned: "abandoned while waiting", out_timeout: "queue timeout", out_ivr_only: "stayed in the IVR",
  out_no_queue: "no queue", out_unknown: "unknown outcome", out_outbound: "outbound call",
  out_no_answer: "no answer", out_busy: "busy", out_congestion: "network congestion", out_failed: "failed", out_rejected: "rejected",
  ticket_qualify: "Ticket qualified", ticket_hold: "Ticket on hold", ticket_resume: "Ticket resumed",
  ticket_resolve: "Ticket resolved", ticket_reopen: "Ticket reopened",
  err_generic: "That did not work. Try again.", "err_no-live-call": "No call in progress on your phone.",
  "err_no-interface": "No phone is mapped to your account.", "err_no-device": "No phone is mapped to your account.",
  "err_ami-unavailable": "The phone system does not answer.", "err_transfer-refused": "The phone system refused the transfer.",
  "err_no-such-target": "Unknown recipient.", "err_bad-number": "Not a valid number.",
  "err_dtmf-refused": "The key could not be sent.", "err_pause-refused": "Break refused: you are in no queue.",
  "err_call-refused": "The call could not be placed.", "err_queue-refused": "Queue refused.",
  "err_ticket-not-found": "Ticket not found.", "err_ticket-invalid-category": "Unknown category.",
  "err_ticket-invalid-transition": "Not possible for this ticket.", "err_bad-field": "Invalid field.",
  "err_call-not-found": "This call is no longer yours.", "err_directory-unavailable": "Directory unavailable.",
  "err_unauthenticated": "Session ended: log in again.",
});

// The supervisor's floor on the wallboard: alerts, actions on an agent, abandoned calls, TV mode.
Object.assign(window.CTI_I18N.fr, {
  wb_sound: "Son des alertes", wb_tv: "Mode TV", wb_pause_today: "Pause (jour)", wb_actions: "Actions",
  wb_abandoned_today: "Appels abandonnés aujourd'hui", wb_listen: "Écouter", wb_whisper: "Chuchoter (à l'agent)",
  wb_barge: "Intervenir (à trois)", wb_force_pause: "Mettre en pause", wb_end_pause: "Fin de pause",
  wb_logout_agent: "Déconnecter des files", wb_call_back: "Rappeler", wb_called_back: "rappelé",
  wb_waited: "attente", wb_none_abandoned: "Aucun appel abandonné aujourd'hui.", wb_done: "C'est fait.",
  wb_spy_ringing: "Votre téléphone sonne : décrochez pour écouter.", wb_dialing: "Votre téléphone sonne, puis le client est appelé.",
  wb_alert_wait: "Attente longue :", wb_alert_sl: "NS sous l'objectif :", wb_alert_pause: "Pause longue :",
  wb_alert_sla: "SLA dépassé : ticket", "err_spy-refused": "L'écoute a été refusée par le serveur téléphonique.",
  "err_no-such-agent": "Agent inconnu.", err_forbidden: "Réservé aux superviseurs.", reason_supervisor: "imposée",
});
Object.assign(window.CTI_I18N.en, {
  wb_sound: "Alert sound", wb_tv: "TV mode", wb_pause_today: "Break (today)", wb_actions: "Actions",
  wb_abandoned_today: "Calls abandoned today", wb_listen: "Listen", wb_whisper: "Whisper (to the agent)",
  wb_barge: "Barge in (three-way)", wb_force_pause: "Put on a break", wb_end_pause: "End the break",
  wb_logout_agent: "Log out of the queues", wb_call_back: "Call back", wb_called_back: "called back",
  wb_waited: "waited", wb_none_abandoned: "No call abandoned today.", wb_done: "Done.",
  wb_spy_ringing: "Your phone rings: pick up to listen.", wb_dialing: "Your phone rings, then the customer is called.",
  wb_alert_wait: "Long wait:", wb_alert_sl: "SL under target:", wb_alert_pause: "Long break:",
  wb_alert_sla: "SLA breached: ticket", "err_spy-refused": "The phone system refused to listen in.",
  "err_no-such-agent": "Unknown agent.", err_forbidden: "Supervisors only.", reason_supervisor: "set by a supervisor",
});

// The campaign manager's and admin's page (admin.js).
Object.assign(window.CTI_I18N.fr, {
  ad_title: "Gestion", ad_campaigns: "Campagnes", ad_users: "Utilisateurs", ad_wallboard: "Mur d'information",
  ad_login_title: "Connexion gestion", ad_refused: "Réservé aux superviseurs et administrateurs",
  ad_campaign_list: "Campagnes", ad_name: "Nom", ad_state: "État", ad_mode: "Mode", ad_queue: "File", ad_contacts: "Contacts",
  ad_new_campaign: "Nouvelle campagne", ad_mode_preview: "aperçu", ad_mode_progressive: "progressif", ad_mode_predictive: "prédictif",
  ad_rules: "Règles horaires", ad_create: "Créer", ad_campaign: "Campagne", ad_start: "Démarrer", ad_pause: "Mettre en pause",
  ad_stop: "Arrêter", ad_upload: "Charger un fichier de contacts (CSV)", ad_import: "Importer",
  ad_why: "Pourquoi pas encore appelés", ad_reason: "Raison", ad_count: "Contacts",
  ad_next_local: "Prochain créneau (heure du contact)", ad_next_centre: "Prochain créneau (heure du centre)",
  ad_role: "Rôle", ad_phones: "Postes", ad_sessions: "Sessions", ad_new_user: "Ajouter ou modifier un utilisateur",
  role_agent: "téléconseiller", role_supervisor: "superviseur", role_admin: "administrateur",
  ad_interface: "Interface de file (ex. PJSIP/1001)", ad_device: "Téléphone (ex. PJSIP/1001)", ad_language: "Langue",
  ad_save_user: "Enregistrer", ad_disable: "Désactiver", ad_enable: "Réactiver", ad_reset_password: "Nouveau mot de passe",
  ad_edit: "Modifier", ad_remove: "Supprimer", ad_active: "actif", ad_disabled: "désactivé", ad_done: "C'est fait.",
  ad_new_password_for: "Nouveau mot de passe (8 caractères au moins) pour", ad_confirm_remove: "Supprimer définitivement",
  ad_user_saved: "Utilisateur enregistré : il peut se connecter dès maintenant.", ad_open: "Ouvrir",
  ad_state_draft: "brouillon", ad_state_running: "en cours", ad_state_paused: "en pause", ad_state_stopped: "arrêtée",
  ad_state_finished: "terminée", ad_campaign_created: "Campagne créée.", ad_total: "Contacts", ad_dialled: "Appels passés",
  ad_remaining: "Restants", ad_contact_rate: "Taux de contact", ad_conversion: "Transformation", ad_drop_rate: "Taux de rejet",
  ad_argued: "Argumentés", ad_converted: "Ventes", ad_engine_dialing: "Numérotation en cours", ad_engine_waiting: "En attente",
  ad_uploading: "Envoi du fichier…", ad_importing: "Vérification et import des lignes…",
  ad_imported: "{accepted} contacts importés, {rejected} lignes refusées.", ad_line: "Ligne",
  "err_bad-file": "Ce fichier n'est pas une liste de contacts lisible.", "err_no-campaign": "Campagne inconnue.",
  "err_bad-campaign": "Réglage de campagne invalide.", "err_no-such-user": "Utilisateur inconnu.",
  "err_self-disable": "Vous ne pouvez pas vous désactiver vous-même.", "err_self-remove": "Vous ne pouvez pas vous supprimer vous-même.",
  "err_campaign-exists": "Une campagne porte déjà ce nom.",
});
Object.assign(window.CTI_I18N.en, {
  ad_title: "Management", ad_campaigns: "Campaigns", ad_users: "Users", ad_wallboard: "Wallboard",
  ad_login_title: "Management login", ad_refused: "Supervisors and admins only",
  ad_campaign_list: "Campaigns", ad_name: "Name", ad_state: "State", ad_mode: "Mode", ad_queue: "Queue", ad_contacts: "Contacts",
  ad_new_campaign: "New campaign", ad_mode_preview: "preview", ad_mode_progressive: "progressive", ad_mode_predictive: "predictive",
  ad_rules: "Calling-hours rules", ad_create: "Create", ad_campaign: "Campaign", ad_start: "Start", ad_pause: "Pause",
  ad_stop: "Stop", ad_upload: "Load a contact file (CSV)", ad_import: "Import",
  ad_why: "Why not dialled yet", ad_reason: "Reason", ad_count: "Contacts",
  ad_next_local: "Next allowed (callee's time)", ad_next_centre: "Next allowed (centre's time)",
  ad_role: "Role", ad_phones: "Phones", ad_sessions: "Sessions", ad_new_user: "Add or change a user",
  role_agent: "agent", role_supervisor: "supervisor", role_admin: "admin",
  ad_interface: "Queue interface (e.g. PJSIP/1001)", ad_device: "Phone (e.g. PJSIP/1001)", ad_language: "Language",
  ad_save_user: "Save", ad_disable: "Disable", ad_enable: "Enable", ad_reset_password: "New password",
  ad_edit: "Edit", ad_remove: "Remove", ad_active: "active", ad_disabled: "disabled", ad_done: "Done.",
  ad_new_password_for: "New password (at least 8 characters) for", ad_confirm_remove: "Remove for good",
  ad_user_saved: "User saved: they can log in right now.", ad_open: "Open",
  ad_state_draft: "draft", ad_state_running: "running", ad_state_paused: "paused", ad_state_stopped: "stopped",
  ad_state_finished: "finished", ad_campaign_created: "Campaign created.", ad_total: "Contacts", ad_dialled: "Dialled",
  ad_remaining: "Remaining", ad_contact_rate: "Contact rate", ad_conversion: "Conversion", ad_drop_rate: "Drop rate",
  ad_argued: "Argued", ad_converted: "Sales", ad_engine_dialing: "Dialling", ad_engine_waiting: "Waiting",
  ad_uploading: "Sending the file…", ad_importing: "Checking and importing the rows…",
  ad_imported: "{accepted} contacts imported, {rejected} rows refused.", ad_line: "Line",
  "err_bad-file": "This file is not a readable contact list.", "err_no-campaign": "Unknown campaign.",
  "err_bad-campaign": "Invalid campaign setting.", "err_no-such-user": "Unknown user.",
  "err_self-disable": "You cannot disable yourself.", "err_self-remove": "You cannot remove yourself.",
  "err_campaign-exists": "A campaign already has this name.",
});

// Why a campaign contact is not dialled yet (the dialer's why codes, docs/dialer.md).
Object.assign(window.CTI_I18N.fr, {
  why_window: "hors des créneaux d'appel autorisés", why_holiday: "jour férié chez le contact",
  why_cap: "plafond d'appels atteint sur la période", why_refusal_cooldown: "délai après un refus",
  why_redial_lock: "délai après un appel abandonné", why_number_type: "type de numéro refusé par les règles",
  why_country: "pays non couvert par la campagne", why_invalid_number: "numéro invalide", why_scheduled: "programmé",
  why_retry: "nouvel essai programmé", why_dnc: "liste d'opposition", why_preview: "en attente d'un agent (aperçu)",
  why_campaign_paused: "campagne en pause", why_campaign_stopped: "campagne arrêtée", why_campaign_draft: "campagne non démarrée",
  why_campaign_not_started: "campagne pas encore commencée", why_campaign_ended: "campagne terminée", why_due: "à appeler",
  why_blocked: "bloqué", why_skipped: "passé", why_recovered: "repris après un arrêt",
});
Object.assign(window.CTI_I18N.en, {
  why_window: "outside the allowed calling windows", why_holiday: "public holiday at the callee's",
  why_cap: "call cap reached for the period", why_refusal_cooldown: "cool-down after a refusal",
  why_redial_lock: "lock after an abandoned call", why_number_type: "number type refused by the rules",
  why_country: "country not covered by the campaign", why_invalid_number: "invalid number", why_scheduled: "scheduled",
  why_retry: "retry scheduled", why_dnc: "do-not-call list", why_preview: "waiting for an agent (preview)",
  why_campaign_paused: "campaign paused", why_campaign_stopped: "campaign stopped", why_campaign_draft: "campaign not started",
  why_campaign_not_started: "campaign not begun yet", why_campaign_ended: "campaign over", why_due: "due",
  why_blocked: "blocked", why_skipped: "skipped", why_recovered: "recovered after a stop",
});

// The desktop's outbound panel (preview campaigns and dispositions).
Object.assign(window.CTI_I18N.fr, {
  outbound: "Campagne sortante", next_contact: "Contact suivant", preview_call: "Appeler", preview_skip: "Passer",
  disposition_needed: "Qualifiez l'appel avant le suivant :", callback_at: "Rappel le",
  mode_preview: "aperçu", mode_progressive: "progressif", mode_predictive: "prédictif",
  dispo_sale: "Vente", dispo_appointment: "RDV", dispo_argued: "Argumenté", dispo_refused: "Refus",
  dispo_callback: "Rappel", dispo_wrong_number: "Faux numéro", dispo_no_answer: "Répondeur",
  no_contact_now: "Aucun contact à appeler maintenant.", callback_needs_date: "Indiquez la date et l'heure du rappel.",
  dispo_saved: "Appel qualifié.", "err_no-contact": "Ce contact n'est plus le vôtre.",
});
Object.assign(window.CTI_I18N.en, {
  outbound: "Outbound campaign", next_contact: "Next contact", preview_call: "Call", preview_skip: "Skip",
  disposition_needed: "Qualify the call before the next one:", callback_at: "Call back on",
  mode_preview: "preview", mode_progressive: "progressive", mode_predictive: "predictive",
  dispo_sale: "Sale", dispo_appointment: "Appointment", dispo_argued: "Argued", dispo_refused: "Refused",
  dispo_callback: "Call back", dispo_wrong_number: "Wrong number", dispo_no_answer: "Answering machine",
  no_contact_now: "No contact to call right now.", callback_needs_date: "Give the callback's date and time.",
  dispo_saved: "Call qualified.", "err_no-contact": "This contact is no longer yours.",
});

// The desktop's callbacks.
Object.assign(window.CTI_I18N.fr, {
  callbacks: "Rappels", for_me: "pour moi", for_team: "pour l'équipe", schedule_callback: "Programmer le rappel",
  callback_scheduled: "Rappel programmé.", "err_bad-callback": "Le rappel doit être dans le futur.",
  cb_waiting: "vous attend ;", cb_team_at: "à l'équipe dès le",
});
Object.assign(window.CTI_I18N.en, {
  callbacks: "Callbacks", for_me: "for me", for_team: "for the team", schedule_callback: "Schedule the callback",
  callback_scheduled: "Callback scheduled.", "err_bad-callback": "A callback must be in the future.",
  cb_waiting: "waiting for you;", cb_team_at: "to the team from",
});

// The desktop's call script.
Object.assign(window.CTI_I18N.fr, {
  call_script: "Script d'appel", next_phase: "Phase suivante", typology: "Typologie (pré-remplit la catégorie du ticket) :",
  category_set: "Catégorie proposée :",
});
Object.assign(window.CTI_I18N.en, {
  call_script: "Call script", next_phase: "Next phase", typology: "Typology (pre-fills the ticket's category):",
  category_set: "Category set:",
});

// Editing the customer file.
Object.assign(window.CTI_I18N.fr, {
  edit_customer: "Modifier la fiche", save_customer: "Enregistrer la fiche", customer_saved: "Fiche enregistrée.",
  "err_customer-not-found": "Fiche introuvable.", "err_customer-invalid": "Champ de la fiche invalide.",
});
Object.assign(window.CTI_I18N.en, {
  edit_customer: "Edit the file", save_customer: "Save the file", customer_saved: "File saved.",
  "err_customer-not-found": "File not found.", "err_customer-invalid": "Invalid field in the file.",
});

// The agent's outbound figures.
Object.assign(window.CTI_I18N.fr, { fig_argued: "Contacts argumentés", fig_conversion: "Transformation" });
Object.assign(window.CTI_I18N.en, { fig_argued: "Contacts argued", fig_conversion: "Conversion" });

// Call scripts on the management page.
Object.assign(window.CTI_I18N.fr, {
  ad_scripts: "Scripts d'appel", ad_scripts_hint: "Par file ou campagne (* pour les autres). Sans script, les postes montrent la charte ADPC livrée.",
  ad_script_key: "File ou campagne", ad_typologies: "Typologies (une par ligne : libellé = catégorie)",
  ad_save_script: "Enregistrer le script", ad_drop_script: "Revenir à la charte livrée", ad_phase: "Phase",
  ad_prompts: "Consignes (une par ligne)", ad_script_saved: "Script enregistré : les postes l'affichent dès le prochain appel.",
  "err_no-script": "Pas de script pour cette file.",
});
Object.assign(window.CTI_I18N.en, {
  ad_scripts: "Call scripts", ad_scripts_hint: "By queue or campaign (* for the others). Without one, desktops show the shipped ADPC charter.",
  ad_script_key: "Queue or campaign", ad_typologies: "Typologies (one per line: label = category)",
  ad_save_script: "Save the script", ad_drop_script: "Back to the shipped charter", ad_phase: "Phase",
  ad_prompts: "Prompts (one per line)", ad_script_saved: "Script saved: desktops show it from the next call.",
  "err_no-script": "No script for this queue.",
});

// Why a row of a contact file was refused (the dialer's importer).
Object.assign(window.CTI_I18N.fr, {
  rr_no_phone: "pas de numéro de téléphone", rr_invalid: "{n} n'est pas un numéro valide (région {r})",
  rr_not_phone: "{n} n'est pas un numéro de téléphone", rr_zone: "fuseau horaire inconnu {z} (ex. Europe/Paris)",
  rr_country: "pays inconnu {c} : un code à deux lettres comme FR ou MA", rr_consent: "consentement {v} : oui ou non",
  rr_priority: "priorité {v} : un nombre entier", rr_duplicate: "numéro en double dans la campagne",
});
Object.assign(window.CTI_I18N.en, {
  rr_no_phone: "no phone number", rr_invalid: "{n} is not a valid number (region {r})",
  rr_not_phone: "{n} is not a phone number", rr_zone: "unknown time zone {z} (e.g. Europe/Paris)",
  rr_country: "unknown country {c}: a two-letter code such as FR or MA", rr_consent: "consent {v}: yes or no",
  rr_priority: "priority {v}: a whole number", rr_duplicate: "number already in the campaign",
});
