// The shipped SVI's menus and choices in words (dialplans/cti-inbound.conf, and the simulated
// PBX which plays the same menus): a pop shows "Menu principal → Problème technique", not the
// raw path `main:enter=enter › main:choice=1`. Menus or keys of another dialplan fall back to
// "<menu> : touche N".
window.CTI_IVR = {
  fr: {
    menus: { language: "Langue", main: "Menu principal", support: "Support technique", billing: "Facturation", hours: "Horaires" },
    choices: {
      "language:1": "Français", "language:2": "English",
      "main:1": "Problème technique", "main:2": "Achat ou abonnement", "main:3": "Facture",
      "main:4": "Horaires et adresse", "main:5": "Assistance", "main:0": "Parler à un conseiller", "main:*": "Réécouter",
      "support:1": "Panne ou incident", "support:2": "Suivi d'une demande", "support:9": "Retour au menu principal",
      "billing:1": "Question de facture ou paiement", "billing:2": "Réclamation", "billing:9": "Retour au menu principal",
    },
    key: "touche", invalid: "saisie invalide", timeout: "sans réponse", fallback: "renvoyé vers un conseiller",
    closed: "fermé", holiday: "jour férié",
  },
  en: {
    menus: { language: "Language", main: "Main menu", support: "Technical support", billing: "Billing", hours: "Opening hours" },
    choices: {
      "language:1": "French", "language:2": "English",
      "main:1": "Technical problem", "main:2": "Purchase or subscription", "main:3": "Invoice",
      "main:4": "Hours and address", "main:5": "Assistance", "main:0": "Speak to an advisor", "main:*": "Listen again",
      "support:1": "Fault or incident", "support:2": "Follow-up of a request", "support:9": "Back to the main menu",
      "billing:1": "Invoice or payment question", "billing:2": "Complaint", "billing:9": "Back to the main menu",
    },
    key: "key", invalid: "invalid key", timeout: "no answer", fallback: "sent to an advisor",
    closed: "closed", holiday: "public holiday",
  },
};

// ["main:enter=enter", "main:choice=1"] -> "Menu principal → Problème technique"
window.ctiIvrPath = (path, lang) => {
  const v = window.CTI_IVR[lang] || window.CTI_IVR.fr;
  const words = [];
  (path || []).forEach((step) => {
    const m = /^([^:]*):([^=]*)=?(.*)$/.exec(step);
    if (!m) { words.push(step); return; }
    const [, menu, kind, value] = m;
    const menuName = v.menus[menu] || menu;
    if (kind === "enter") { if (words[words.length - 1] !== menuName) words.push(menuName); }
    else if (kind === "choice") words.push(v.choices[menu + ":" + value] || (menuName + " : " + v.key + " " + value));
    else if (kind === "invalid") words.push("(" + v.invalid + ")");
    else if (kind === "timeout") words.push("(" + v.timeout + ")");
    else if (value && v[value]) words.push(v[value]);
  });
  return words.join(" → ");
};
