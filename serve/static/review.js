// Clearsight review page: small comforts only; every form also works without JavaScript.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Ask before recording "clean" on a shipment held for physical inspection.
  for (const form of document.querySelectorAll("form.outcome-form")) {
    form.addEventListener("submit", (event) => {
      const found = form.querySelector("select[name=found]").value;
      const held = form.closest(".shipment").classList.contains("tier-physical_inspection");
      if (held && found === "clean" && !window.confirm("Record this held shipment as clean?")) {
        event.preventDefault();
        return;
      }
      form.querySelector("button[type=submit]").disabled = true;  // no double submissions
    });
  }
  // Bring the shipment just recorded into view.
  const recorded = new URLSearchParams(window.location.search).get("recorded");
  const target = recorded && document.getElementById("shipment-" + recorded);
  if (target) target.scrollIntoView({ block: "center" });
});
