// Call scripts: the call charter's four phases (Accueil, Découverte, Proposition, Conclusion —
// ADPC, as the floor is trained) with their prompts, and per queue or campaign the typologies
// that pre-fill the ticket's category. French first, English second.
window.CTI_SCRIPTS = {
  phases: {
    fr: [
      ["Accueil", ["Saluer, se présenter : « Service client, bonjour, [prénom] à votre écoute. »",
        "Rassurer : l'appel aboutit au bon service.", "Identifier le client (nom, numéro de compte)."]],
      ["Découverte", ["Questions ouvertes : « Que se passe-t-il ? Depuis quand ? »",
        "Reformuler la demande et la faire valider.", "Remercier pour chaque information ou manipulation."]],
      ["Proposition", ["S'excuser seulement s'il y a faute.", "Proposer une solution claire et son délai.",
        "Vérifier : « Cela répond-il à votre demande ? »"]],
      ["Conclusion", ["Récapituler ce qui est convenu.", "Proposer un autre service si c'est utile.",
        "Remercier, prendre congé ; qualifier le ticket."]],
    ],
    en: [
      ["Greeting", ["Greet, introduce yourself: \"Customer service, good morning, [name] speaking.\"",
        "Reassure: the call reached the right service.", "Identify the customer (name, account number)."]],
      ["Discovery", ["Open questions: \"What is happening? Since when?\"",
        "Rephrase the request and have it confirmed.", "Thank the customer for each piece of information."]],
      ["Proposal", ["Apologise only if we were at fault.", "Offer a clear solution and its timing.",
        "Check: \"Does that answer your request?\""]],
      ["Conclusion", ["Sum up what was agreed.", "Offer another service when useful.",
        "Thank, say goodbye; qualify the ticket."]],
    ],
  },
  // Typologies by queue (or campaign): [label fr, label en, ticket category].
  typologies: {
    support: [["Panne / incident", "Fault / incident", "incident"], ["Suivi de demande", "Follow-up", "information"],
      ["Réclamation", "Complaint", "complaint"]],
    billing: [["Question de facture", "Invoice question", "information"], ["Réclamation", "Complaint", "complaint"]],
    sales: [["Commande", "Order", "order"], ["Renseignement", "Enquiry", "information"]],
    hotline: [["Information", "Information", "information"], ["Incident", "Incident", "incident"],
      ["Réclamation", "Complaint", "complaint"]],
    "*": [["Information", "Information", "information"], ["Réclamation", "Complaint", "complaint"],
      ["Commande", "Order", "order"], ["Autre", "Other", "other"]],
  },
};
