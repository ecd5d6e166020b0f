"""Instance providers: where appliances come from (netns now, nova later), behind one Protocol."""
